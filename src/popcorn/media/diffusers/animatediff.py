"""AnimateDiff: a motion adapter loaded into a Stable Diffusion 1.5 pipeline, and the scheduler
AnimateDiff-Lightning was distilled with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError
from popcorn.media.diffusers.loader import first_line


def saved_with_adapter(model: str) -> bool:
    """Whether the pipeline folder ``model`` holds its own motion adapter."""
    return (Path(model).expanduser() / "motion_adapter").is_dir()


def load_with_adapter(
    diffusers: Any, cls: Any, model: str, adapter: str, default: str | None, kwargs: Any
) -> Any:
    """``cls.from_pretrained(model)`` with the motion adapter ``adapter`` (a folder, a
    .safetensors file or ``REPO:FILE``), unless the folder holds its own (then a warning when
    ``adapter`` is not the preset's ``default``), with Lightning's scheduler."""
    if saved_with_adapter(model):
        if adapter != default:
            logging.getLogger(__name__).warning(
                "%s holds its own motion adapter; --motion-adapter %s is not used", model, adapter
            )
        return cls.from_pretrained(model, **kwargs)
    motion = motion_adapter(diffusers, adapter, kwargs["dtype"])
    pipe = cls.from_pretrained(model, motion_adapter=motion, **kwargs)
    # AnimateDiff-Lightning was distilled with trailing timesteps on a linear schedule.
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing", beta_schedule="linear"
    )
    return pipe


def motion_adapter(diffusers: Any, source: str, dtype: Any) -> Any:
    """A MotionAdapter from a folder, a .safetensors file, or ``REPO:FILE`` on the hub."""
    if Path(source).expanduser().is_dir():
        return diffusers.MotionAdapter.from_pretrained(source, dtype=dtype)
    file = Path(source).expanduser()
    if not file.is_file():
        repo, _, name = source.partition(":")
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(repo, name))
        except Exception as err:  # the hub client raises many types; all mean "not available"
            raise PopcornError(
                f"cannot fetch motion adapter {source!r}: {first_line(err)} "
                "(offline? pass --motion-adapter FOLDER_OR_FILE)"
            ) from None
    from safetensors.torch import load_file

    adapter = diffusers.MotionAdapter()
    try:
        adapter.load_state_dict(load_file(str(file)))
    except RuntimeError as err:  # weights of another shape: not an AnimateDiff v1.5 adapter
        raise PopcornError(
            f"motion adapter {source!r} does not fit MotionAdapter(): {first_line(err)} "
            "(pass a folder saved with MotionAdapter.save_pretrained)"
        ) from None
    return adapter.to(dtype)
