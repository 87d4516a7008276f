"""``popcorn pull``: what presets, encoders and LLMs need from the hub, checked or fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _popcorn(*args: str, hub: Path) -> subprocess.CompletedProcess[str]:
    # A fresh process: the hub library reads its cache folder once, at import.
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _cache(hub: Path, repo: str) -> Path:
    """A repository as the hub's cache lays it out after a download."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123456789abcdef")
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    return snapshot


def test_check_reports_what_is_cached(tmp_path: Path):
    hub = tmp_path / "hub"
    snapshot = _cache(hub, "Lightricks/LTX-Video")
    done = _popcorn("pull", "ltx", "--check", "--json", hub=hub)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "repo": "Lightricks/LTX-Video",
        "cached": True,
        "path": str(snapshot),
    }
    missing = _popcorn("pull", "sd15", "vit", "--check", hub=hub)
    assert missing.returncode == 1
    assert "not cached: stable-diffusion-v1-5/stable-diffusion-v1-5, google/vit-base" in (
        missing.stderr
    )
    assert missing.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "repos"),
    [
        ("animatediff", ["emilianJR/epiCRealism", "ByteDance/AnimateDiff-Lightning"]),
        ("hf:Qwen/Qwen2.5-7B-Instruct", ["Qwen/Qwen2.5-7B-Instruct"]),
        ("minilm-l12", ["sentence-transformers/all-MiniLM-L12-v2"]),
        ("embedded", []),
        ("openai:gpt-4o", []),
    ],
)
def test_names_map_to_their_repositories(name: str, repos: list[str]):
    from popcorn.cli.pull import repos_for

    found = repos_for(name)
    assert found[-len(repos) :] == repos if repos else found == []


def test_a_download_offline_is_one_line(tmp_path: Path):
    failed = _popcorn("pull", "cogvideox", hub=tmp_path / "hub")
    assert failed.returncode == 1
    assert "cannot download 'THUDM/CogVideoX-5b'" in failed.stderr
    assert failed.stderr.strip().count("\n") <= 1


LTX_INDEX = {
    "_class_name": "LTXPipeline",
    "_diffusers_version": "0.32.0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLLTXVideo"],
}
LTX_LISTING = [
    ".gitattributes",
    "README.md",
    "ltx-video-2b-v0.9.safetensors",  # single-file checkpoints: not what the pipeline loads
    "ltxv-13b-0.9.7-dev.safetensors",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/spiece.model",
    "tokenizer/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def test_a_pipeline_fetches_its_components_and_not_the_single_file_checkpoints():
    from popcorn.weights import pipeline_files

    files = pipeline_files(LTX_LISTING, LTX_INDEX)
    assert files == sorted(n for n in LTX_LISTING if "/" in n or n == "model_index.json")


SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": True,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "image_encoder": [None, None],
}


def _sd15_listing() -> list[str]:
    names = ["model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned-emaonly.safetensors"]
    names += ["feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json"]
    names += [f"tokenizer/{f}" for f in ("merges.txt", "vocab.json", "tokenizer_config.json")]
    for folder, stem in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("safety_checker", "model"),
    ]:
        names.append(f"{folder}/config.json")
        for variant in ("", ".fp16", ".non_ema"):
            names.append(f"{folder}/{stem}{variant}.safetensors")
            names.append(f"{folder}/{stem}{variant}.bin")
        names.append(f"{folder}/flax_model.msgpack")
    names.append("image_encoder/config.json")  # a component the index says is absent
    return names


@pytest.mark.parametrize(("variant", "suffix"), [(None, ""), ("fp16", ".fp16")])
def test_a_pipeline_fetches_one_format_and_one_variant(variant: str | None, suffix: str):
    from popcorn.weights import pipeline_files

    files = pipeline_files(_sd15_listing(), SD15_INDEX, variant)
    weights = [f for f in files if f.endswith((".safetensors", ".bin", ".msgpack", ".ckpt"))]
    assert weights == [
        f"safety_checker/model{suffix}.safetensors",
        f"text_encoder/model{suffix}.safetensors",
        f"unet/diffusion_pytorch_model{suffix}.safetensors",
        f"vae/diffusion_pytorch_model{suffix}.safetensors",
    ]
    assert "feature_extractor/preprocessor_config.json" in files
    assert "tokenizer/vocab.json" in files and "unet/config.json" in files
    assert not [f for f in files if f.startswith("image_encoder/")]


def test_a_model_fetches_its_loaded_weights_and_no_exports():
    from popcorn.weights import model_files

    listing = [
        "1_Pooling/config.json",
        "config.json",
        "modules.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "rust_model.ot",
        "onnx/model.onnx",
        "onnx/model_O4.onnx",
        "openvino/openvino_model.bin",
        "openvino/openvino_model.xml",
        "tokenizer.json",
    ]
    assert model_files(listing) == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "tokenizer.json",
    ]
    sharded = ["consolidated.safetensors", "params.json", "model.safetensors.index.json"]
    sharded += ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert "consolidated.safetensors" not in model_files(sharded)
    assert len(model_files(sharded)) == 4


def test_variants_are_read_from_file_names():
    from popcorn.weights import variant_of

    assert variant_of("unet/diffusion_pytorch_model.fp16.safetensors") == "fp16"
    assert variant_of("t/model.fp16-00001-of-00002.safetensors") == "fp16"
    assert variant_of("t/model.safetensors.index.fp16.json") == "fp16"
    assert variant_of("t/model-00001-of-00002.safetensors") is None
    assert variant_of("t/model.safetensors.index.json") is None


def test_an_unknown_bare_name_is_refused_with_the_presets(tmp_path: Path):
    done = _popcorn("pull", "ltxx", hub=tmp_path / "hub")
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.count("\n") == 0
    assert "'ltxx' is not a preset: did you mean 'ltx'?" in line
    assert "ltx, hunyuan, cogvideox" in line and "sd15" in line and "owner/name" in line


def test_a_hub_id_with_an_owner_stays_a_hub_id():
    from popcorn.cli.pull import repos_for

    assert repos_for("someone/ltxx") == ["someone/ltxx"]
    assert repos_for("hf:someone/ltxx") == ["someone/ltxx"]


def test_a_download_with_the_hub_unreachable_says_offline(tmp_path: Path):
    from conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_ENDPOINT": closed}
    done = subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", "pull", "ltx"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"popcorn: error: cannot download 'Lightricks/LTX-Video': offline: the hub ({closed}) "
        "cannot be reached (run it where the hub can be reached, or set HF_HOME to a cache "
        "that holds it)"
    )


def _size_of(name: str) -> int:
    return 2**20 if name.endswith(".safetensors") else 100


def test_a_preset_downloads_only_what_its_pipeline_loads_and_says_how_much_first(
    tmp_path: Path,
):
    from fakehub import serve

    # Each file's bytes differ (the cache stores equal ones once); weights of 1 MiB each.
    files = {name: name.encode().ljust(_size_of(name), b"x") for name in LTX_LISTING}
    files["model_index.json"] = json.dumps(LTX_INDEX).encode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    with serve({"Lightricks/LTX-Video": files}) as hub:
        env["HF_ENDPOINT"] = hub.url
        done = subprocess.run(
            [sys.executable, "-m", "popcorn.cli.main", "pull", "ltx", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        loaded = [n for n in LTX_LISTING if "/" in n or n == "model_index.json"]
        assert hub.fetched() == sorted(f"Lightricks/LTX-Video/{n}" for n in loaded)
        check = subprocess.run(
            [sys.executable, "-m", "popcorn.cli.main", "pull", "ltx", "--check", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["cached"] is True
    said = done.stderr.splitlines()[0]  # before the hub's progress bars
    size = sum(len(files[n]) for n in loaded)
    todo = size - len(files["model_index.json"])  # read first, to know what the rest is
    assert said == (
        f"downloading Lightricks/LTX-Video: {len(loaded) - 1} of {len(loaded)} files, "
        f"{todo / 2**20:.2f} MiB (the model loads {size / 2**20:.2f} MiB)"
    )
    assert 5 * 2**20 < size < 6 * 2**20  # five weight files, not the root's checkpoints
    record = json.loads(done.stdout)
    assert record["cached"] is True and Path(record["path"], "vae", "config.json").is_file()


def test_a_pulled_pipeline_loads_offline(tmp_path: Path):
    from conftest import free_port
    from fakehub import serve
    from toys.sd import save_toy_sd15

    folder = save_toy_sd15(tmp_path / "toy")
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    with serve({"stable-diffusion-v1-5/stable-diffusion-v1-5": files}) as hub:
        env["HF_ENDPOINT"] = hub.url
        pulled = subprocess.run(
            [sys.executable, "-m", "popcorn.cli.main", "pull", "sd15"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr
    code = (
        "from popcorn.media.diffusers.cover import DiffusersCover\n"
        "from popcorn.media.diffusers.loader import MemoryOptions\n"
        "from popcorn.media.presets import COVER_PRESETS\n"
        "cover = DiffusersCover(COVER_PRESETS['sd15'], memory=MemoryOptions(device='cpu'))\n"
        "cover.check()\n"
        "print(type(cover.pipeline()).__name__)\n"
    )
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # the hub is gone
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "StableDiffusionPipeline"
