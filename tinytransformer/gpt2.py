# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/11-gpt2.md
"""Load Hugging Face GPT-2 checkpoints into our GPT (chapter 11).

Nothing here imports ``transformers``: a pretrained directory is read with
``safetensors`` (or ``torch.load``), and hub names are downloaded with
``huggingface_hub``, both imported only when used.
"""

import json
import pickle
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tinytransformer.model import GPT, GPTConfig

CONFIG_NAMES = {  # config.json name -> GPTConfig field
    "vocab_size": "vocab_size",
    "n_positions": "max_seq_len",
    "n_embd": "d_model",
    "n_layer": "n_layers",
    "n_head": "n_heads",
    "n_inner": "d_ff",
    "resid_pdrop": "dropout",
    "layer_norm_epsilon": "layer_norm_eps",
    "tie_word_embeddings": "tie_weights",
}
REQUIRED = {  # settings our architecture hard-codes, with the value it implies
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def config_from_hf(hf_config: Any) -> GPTConfig:
    """Translate a Hugging Face GPT-2 configuration into a
    [`GPTConfig`][tinytransformer.model.GPTConfig].

    Args:
        hf_config: A ``transformers.GPT2Config``, or the dictionary read from a
            ``config.json``.
            Missing entries take GPT-2's defaults, as in ``transformers``.

    Returns:
        The configuration of the same architecture under our names.

    Raises:
        ValueError: If the configuration is not a GPT-2 that our model can represent
            (another ``model_type``, an activation other than tanh-GELU, unusual
            attention scaling, cross-attention) or its sizes are invalid.
    """
    settings = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    model_type = settings.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(
            f"model_type is {model_type!r}; load_gpt2 reads only GPT-2 checkpoints"
            " ('gpt2')"
        )
    activation = settings.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise ValueError(
            f"activation_function {activation!r} is not supported; ours is tanh-GELU"
            f" {TANH_GELUS}"
        )
    for name, value in REQUIRED.items():
        if settings.get(name, value) != value:
            raise ValueError(
                f"{name}={settings[name]!r} is not supported; our architecture needs"
                f" {name}={value}"
            )
    fields = {
        ours: settings[theirs]
        for theirs, ours in CONFIG_NAMES.items()
        if settings.get(theirs) is not None
    }
    # 0.1: GPT-2's dropout when config.json omits it
    return GPTConfig(**{"dropout": 0.1, **fields})


def checkpoint_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor a Hugging Face GPT-2 checkpoint of ``config``
    holds.

    Args:
        config: The architecture.

    Returns:
        GPT-2's tensor names (without the ``transformer.`` prefix) mapped to their
        shapes, in the layout of the checkpoint (``Conv1D`` weights are ``(in, out)``).
    """
    d, d_ff = config.d_model, config.d_ff
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (config.vocab_size, d),
        "wpe.weight": (config.max_seq_len, d),
    }
    for i in range(config.n_layers):
        for norm in ("ln_1", "ln_2"):
            shapes |= {f"h.{i}.{norm}.weight": (d,), f"h.{i}.{norm}.bias": (d,)}
        for name, (d_in, d_out) in {
            "attn.c_attn": (d, 3 * d),
            "attn.c_proj": (d, d),
            "mlp.c_fc": (d, d_ff),
            "mlp.c_proj": (d_ff, d),
        }.items():
            shapes |= {
                f"h.{i}.{name}.weight": (d_in, d_out),
                f"h.{i}.{name}.bias": (d_out,),
            }
    shapes |= {"ln_f.weight": (d,), "ln_f.bias": (d,)}
    if not config.tie_weights:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    return shapes


# causal masks stored by old checkpoints
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def check_checkpoint(state: Mapping[str, Tensor], config: GPTConfig) -> None:
    """Check a GPT-2 state dict (names without prefix) against the tensors ``config``
    needs.

    Args:
        state: Tensor names to tensors, in the checkpoint's layout.
        config: The architecture the checkpoint should have.

    Raises:
        ValueError: Naming every missing key, unexpected key and tensor of the wrong
            shape.
    """
    expected = checkpoint_shapes(config)
    wrong_shape = [
        f"{key} {tuple(state[key].shape)}, expected {expected[key]}"
        for key in expected
        if key in state and tuple(state[key].shape) != expected[key]
    ]
    problems = {
        "missing keys": [key for key in expected if key not in state],
        "unexpected keys": [key for key in state if key not in expected],
        "wrong shapes": wrong_shape,
    }
    report = [
        f"{kind}: {', '.join(keys[:8])}"
        + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        for kind, keys in problems.items()
        if keys
    ]
    if report:
        raise ValueError(
            f"the checkpoint does not match a GPT-2 with n_layers={config.n_layers},"
            f" d_model={config.d_model}, d_ff={config.d_ff},"
            f" vocab_size={config.vocab_size}, max_seq_len={config.max_seq_len},"
            f" tie_weights={config.tie_weights} (the sizes come from its config): "
            + "; ".join(report)
        )


def gpt2_state_dict(
    hf_state: Mapping[str, Tensor], config: GPTConfig
) -> dict[str, Tensor]:
    """Convert a Hugging Face GPT-2 state dict into the state dict of our
    [`GPT`][tinytransformer.model.GPT].

    Args:
        hf_state: GPT-2's tensors by name, with or without the ``transformer.`` prefix.
        config: The architecture, e.g. from
            [`config_from_hf`][tinytransformer.gpt2.config_from_hf].

    Returns:
        A state dict that ``GPT(config).load_state_dict`` accepts.

    Raises:
        ValueError: If keys are missing or unexpected, or shapes do not match
            ``config``.
    """
    state = {
        key.removeprefix("transformer."): tensor for key, tensor in hf_state.items()
    }
    state = {
        key: tensor for key, tensor in state.items() if not MASK_BUFFER.fullmatch(key)
    }
    if config.tie_weights:
        state.pop("lm_head.weight", None)  # the token embedding again
    check_checkpoint(state, config)
    ours = {
        "embeddings.token_embedding.weight": state["wte.weight"],
        "embeddings.position_embedding.weight": state["wpe.weight"],
        "final_norm.weight": state["ln_f.weight"],
        "final_norm.bias": state["ln_f.bias"],
        "lm_head.weight": (
            state["wte.weight"] if config.tie_weights else state["lm_head.weight"]
        ),
    }
    for i in range(config.n_layers):
        theirs, block = f"h.{i}.", f"blocks.{i}."
        for name, ours_name in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
            ours[f"{block}{ours_name}.weight"] = state[f"{theirs}{name}.weight"]
            ours[f"{block}{ours_name}.bias"] = state[f"{theirs}{name}.bias"]
        for name, ours_name in (
            ("attn.c_attn", "attn.qkv_proj"),
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "mlp.fc_in"),
            ("mlp.c_proj", "mlp.fc_out"),
        ):
            weight = state[f"{theirs}{name}.weight"]  # Conv1D layout: (in, out)
            # nn.Linear layout: (out, in)
            ours[f"{block}{ours_name}.weight"] = weight.t()
            ours[f"{block}{ours_name}.bias"] = state[f"{theirs}{name}.bias"]
    return ours


def read_weights(directory: Path) -> dict[str, Tensor]:
    """Read the tensors of a pretrained directory.

    Args:
        directory: Holds ``model.safetensors``, or shards listed in
            ``model.safetensors.index.json``, or ``pytorch_model.bin``.

    Returns:
        The tensors by name, as stored.

    Raises:
        FileNotFoundError: If there are no weights.
        ValueError: If a file cannot be read, or ``safetensors`` is needed but not
            installed.
    """
    shards = ["model.safetensors"]
    index_file = directory / "model.safetensors.index.json"
    if index_file.is_file():  # a large model split into several files
        shards = sorted(
            set(
                json.loads(index_file.read_text(encoding="utf-8"))[
                    "weight_map"
                ].values()
            )
        )
    if all((directory / shard).is_file() for shard in shards):
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as error:
            message = (
                "reading model.safetensors needs safetensors: pip install"
                ' "tinytransformer[gpt2]"'
            )
            raise ValueError(message) from error
        state: dict[str, Tensor] = {}
        for shard in shards:
            try:
                state |= load_file(directory / shard)
            except SafetensorError as error:
                raise ValueError(
                    f"{directory / shard} is not a readable safetensors file: {error}"
                ) from error
        return state
    if (directory / "pytorch_model.bin").is_file():
        try:
            return torch.load(
                directory / "pytorch_model.bin", map_location="cpu", weights_only=True
            )
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            message = (
                f"{directory / 'pytorch_model.bin'} is not a readable PyTorch"
                f" checkpoint: {error}"
            )
            raise ValueError(message) from error
    raise FileNotFoundError(
        f"no weights in {directory}: expected {' + '.join(shards)} or pytorch_model.bin"
    )


def read_config(directory: Path) -> dict[str, Any]:
    """The settings in a pretrained directory's ``config.json``.

    Raises:
        FileNotFoundError: If there is no ``config.json``.
        ValueError: If it is not a JSON object.
    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found; a pretrained directory holds config.json"
            " and model.safetensors"
        )
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    if not isinstance(settings, dict):
        raise ValueError(
            f"{config_file} holds a JSON {type(settings).__name__}, not the object of"
            " settings of a Hugging Face config.json"
        )
    return settings


def read_checkpoint(directory: Path) -> tuple[GPTConfig, dict[str, Tensor]]:
    """Read a Hugging Face GPT-2 pretrained directory: ``config.json`` and the weights.

    Args:
        directory: The pretrained directory.

    Returns:
        The configuration and GPT-2's tensors by name.

    Raises:
        FileNotFoundError: If ``config.json`` or the weights are missing.
        ValueError: If a file cannot be parsed or describes a model we cannot represent.
    """
    return config_from_hf(read_config(directory)), read_weights(directory)


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def download_gpt2(name: str) -> Path:
    """Download (or find in the local cache) a GPT-2 checkpoint from the Hugging Face
    Hub.

    Args:
        name: A hub repository such as ``"gpt2"``, ``"gpt2-medium"`` or
            ``"openai-community/gpt2-xl"``.

    Returns:
        The directory of the downloaded checkpoint.

    Raises:
        ValueError: If ``huggingface_hub`` is missing, or the download fails (offline,
            unknown name);
            the message says how to download once and load from a local directory.
    """
    local_dir = name.split("/")[-1]
    how_to = (
        f"download it once where there is network, e.g. `hf download {name} config.json"
        f" model.safetensors --local-dir {local_dir}` (from huggingface_hub), then pass"
        f" that directory: load_gpt2({local_dir!r})"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ValueError(
            f"{name!r} is not a local directory, and downloading it needs"
            " huggingface_hub "
            f'(pip install "tinytransformer[gpt2]"); or {how_to}'
        ) from error
    patterns = [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "model-*.safetensors",
    ]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    # offline, not cached, unknown repository, invalid name
    except (OSError, ValueError) as error:
        message = (
            f"could not get {name!r} from the Hugging Face Hub"
            f" ({type(error).__name__}); {how_to}"
        )
        raise ValueError(message) from error


def load_gpt2(source: str | PathLike | Any) -> GPT:
    """Build our [`GPT`][tinytransformer.model.GPT] from a Hugging Face GPT-2
    checkpoint.

    A local directory is tried first, so ``load_gpt2("gpt2")`` reads ``./gpt2`` if it
    exists and otherwise downloads GPT-2 small from the hub.

    Args:
        source: A pretrained directory (``config.json`` + ``model.safetensors`` or
            ``pytorch_model.bin``), a Hugging Face Hub name such as ``"gpt2"`` (needs
            ``huggingface_hub`` and, the first time, a network), or an in-memory
            ``transformers.GPT2LMHeadModel`` / ``GPT2Model``.

    Returns:
        The model with GPT-2's weights, in float32 on the CPU, in evaluation mode.

    Raises:
        FileNotFoundError: If a local path does not exist or lacks its files.
        ValueError: If the checkpoint is not a GPT-2 our model can represent, its
            tensors do not match its configuration (the message names the keys), or a
            hub download fails.
    """
    if isinstance(source, nn.Module) and hasattr(
        getattr(source, "config", None), "to_dict"
    ):
        config, hf_state = config_from_hf(source.config), source.state_dict()
    elif isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.exists() and isinstance(source, str) and HUB_NAME.fullmatch(source):
            path = download_gpt2(source)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} is not a pretrained directory (config.json +"
                " model.safetensors)"
            )
        config, hf_state = read_checkpoint(path)
    else:
        raise ValueError(
            f"cannot load GPT-2 from a {type(source).__name__}; pass a directory, a hub"
            " name or a GPT2LMHeadModel"
        )
    model = GPT(config)
    model.load_state_dict(gpt2_state_dict(hf_state, config))
    return model.eval()
