"""Cover images and clips for a script: generators, export, and the render stage."""
