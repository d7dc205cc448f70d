# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/11-to-llama.md
"""Load Hugging Face GPT-2 or Llama-family checkpoints with their tokenizers (11c)."""

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tinytransformer.gpt2 import HUB_NAME, load_gpt2, read_config, read_weights
from tinytransformer.model import GPT, GPTConfig

LLAMA_CONFIG_NAMES = {  # config.json name -> GPTConfig field
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_seq_len",
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "d_ff",
    "rms_norm_eps": "layer_norm_eps",
    "tie_word_embeddings": "tie_weights",
}
LLAMA_DEFAULTS = {
    "max_seq_len": 2048,
    "layer_norm_eps": 1e-6,
    "tie_weights": False,
}  # transformers'
LLAMA_REQUIRED = {  # settings our model hard-codes, with the value it implies
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "sliding_window": None,
}
LLAMA_LAYER_NAMES = {  # Hugging Face's name in model.layers.{i} -> ours in blocks.{i}
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.o_proj.weight": "attn.out_proj.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
    "mlp.gate_proj.weight": "mlp.fc_gate.weight",
    "mlp.up_proj.weight": "mlp.fc_in.weight",
    "mlp.down_proj.weight": "mlp.fc_out.weight",
}


def llama_config_from_hf(hf_config: Any) -> GPTConfig:
    """Translate a Hugging Face Llama configuration into a
    [`GPTConfig`][tinytransformer.model.GPTConfig].

    Args:
        hf_config: A ``transformers.LlamaConfig``, or a ``config.json``'s dictionary.

    Returns:
        The same architecture under our names: RMSNorm, rotary, SwiGLU, no biases.

    Raises:
        ValueError: If the configuration is not a Llama our model can represent (another
            ``model_type``, activation, biases, a sliding window, scaled rotary
            embeddings, a ``head_dim`` other than ``hidden_size / num_attention_heads``)
            or its sizes are invalid.
    """
    settings = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    if settings.get("model_type") != "llama":
        raise ValueError(
            f"model_type is {settings.get('model_type')!r}; "
            "load_llama reads 'llama' checkpoints"
        )
    for name, value in LLAMA_REQUIRED.items():
        if settings.get(name, value) != value:
            raise ValueError(
                f"{name}={settings[name]!r} is not supported; "
                f"our Llama needs {name}={value!r}"
            )
    rope = settings.get("rope_parameters") or {}  # transformers 5
    scaling = settings.get("rope_scaling") or {}  # older config.json files
    rope_types = {
        str(kind)
        for kind in (
            rope.get("rope_type"),
            scaling.get("rope_type"),
            scaling.get("type"),
        )
        if kind not in (None, "default")
    }
    if rope_types:
        raise ValueError(
            f"rotary embeddings of type {', '.join(map(repr, sorted(rope_types)))} "
            "(rope scaling) are not supported; ours are the plain ones of Llama 1 "
            "and 2 ('default')"
        )
    theta = rope.get("rope_theta", settings.get("rope_theta", 10_000.0))
    fields = {
        ours: settings[theirs]
        for theirs, ours in LLAMA_CONFIG_NAMES.items()
        if settings.get(theirs) is not None
    }
    config = GPTConfig(
        **{**LLAMA_DEFAULTS, **fields},
        dropout=0.0,
        bias=False,
        norm="rmsnorm",
        position="rope",
        mlp="swiglu",
        rope_theta=float(theta),
    )
    head_dim = settings.get("head_dim")
    if head_dim is not None and head_dim != config.d_head:
        raise ValueError(
            f"head_dim={head_dim} is not supported; ours is hidden_size / "
            f"num_attention_heads = {config.d_head}"
        )
    return config


def llama_state_dict(
    hf_state: Mapping[str, Tensor], config: GPTConfig
) -> dict[str, Tensor]:
    """Convert a Hugging Face Llama state dict into one for our
    [`GPT`][tinytransformer.model.GPT].

    Args:
        hf_state: The checkpoint's tensors by name
            (``model.layers.0.self_attn.q_proj.weight``, …).
        config: The architecture, e.g. from
            [`llama_config_from_hf`][tinytransformer.pretrained.llama_config_from_hf].

    Returns:
        Our names mapped to the tensors; queries, keys and values stacked in
        ``qkv_proj``.
        Missing tensors are left out, for ``load_state_dict`` to name.

    Raises:
        ValueError: Naming the checkpoint's tensors that have no place in our model.
    """
    state = {
        key: tensor
        for key, tensor in hf_state.items()
        if not key.endswith("rotary_emb.inv_freq")
    }
    if config.tie_weights:
        state.pop("lm_head.weight", None)  # the token embedding again
    ours: dict[str, Tensor] = {}
    for theirs, name in (
        ("model.embed_tokens.weight", "embeddings.token_embedding.weight"),
        ("model.norm.weight", "final_norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ):
        if theirs in state:
            ours[name] = state.pop(theirs)
    if config.tie_weights and "embeddings.token_embedding.weight" in ours:
        ours["lm_head.weight"] = ours["embeddings.token_embedding.weight"]
    for i in range(config.n_layers):
        theirs, block = f"model.layers.{i}.", f"blocks.{i}."
        projections = [f"{theirs}self_attn.{role}_proj.weight" for role in "qkv"]
        if all(
            key in state for key in projections
        ):  # rows: queries, then keys, then values
            ours[f"{block}attn.qkv_proj.weight"] = torch.cat(
                [state.pop(key) for key in projections]
            )
        for name, our_name in LLAMA_LAYER_NAMES.items():
            if theirs + name in state:
                ours[block + our_name] = state.pop(theirs + name)
    if state:
        names = sorted(state)
        raise ValueError(
            f"the checkpoint has tensors our Llama with n_layers={config.n_layers} "
            "has no place "
            f"for: {', '.join(names[:8])}"
            + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        )
    return ours


def load_llama(source: str | PathLike | nn.Module) -> GPT:
    """Our [`GPT`][tinytransformer.model.GPT] from a Hugging Face Llama checkpoint.

    Args:
        source: A pretrained directory (``config.json`` + safetensors), or an in-memory
            ``transformers.LlamaForCausalLM``.

    Returns:
        The model with the checkpoint's weights, float32 on the CPU, in evaluation mode.

    Raises:
        FileNotFoundError: If the directory or its files are missing.
        ValueError: If the checkpoint is not a Llama our model can represent, or its
            tensors do not match its configuration (the message names them).
    """
    if isinstance(source, nn.Module):
        config, hf_state = (
            llama_config_from_hf(getattr(source, "config", {})),
            source.state_dict(),
        )
    else:
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{directory} is not a pretrained directory "
                "(config.json + model.safetensors)"
            )
        config, hf_state = (
            llama_config_from_hf(read_config(directory)),
            read_weights(directory),
        )
    model = GPT(config)
    state = {
        name: tensor.float()
        for name, tensor in llama_state_dict(hf_state, config).items()
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing tensors or wrong shapes, named by PyTorch
        raise ValueError(
            f"the checkpoint does not match its config.json: {error}"
        ) from error
    return model.eval()


class PretrainedTokenizer:
    """A checkpoint's ``tokenizer.json``, read with the ``tokenizers`` library.

    Encoding adds the special tokens the file asks for (Llama's ``<s>`` at the
    start). Decoding reads the ids as the continuation of a text, as generation needs:
    sentencepiece-style decoders drop the space before a text's first word, so the ids
    are decoded after an anchor token whose text is then cut off.

    Args:
        path: The ``tokenizer.json`` file.
        eot_id: The id that ends a text (``config.json``'s ``eos_token_id``) or None.

    Raises:
        ValueError: If ``tokenizers`` is not installed or the file cannot be read.
    """

    def __init__(self, path: Path, eot_id: int | None):
        try:
            from tokenizers import Tokenizer as TokenizerFile
        except ImportError as error:
            raise ValueError(
                "reading tokenizer.json needs tokenizers: "
                'pip install "tinytransformer[gpt2]"'
            ) from error
        try:
            self.tokenizer_file = TokenizerFile.from_file(str(path))
        except Exception as error:  # the Rust library's error for a bad file
            message = f"{path} is not a readable tokenizer.json: {error}"
            raise ValueError(message) from error
        self.path = path
        self.name = f"tokenizer.json ({path.parent.name})"
        self.vocab_size = self.tokenizer_file.get_vocab_size()
        self.eot_id = eot_id
        anchor = self.tokenizer_file.encode("a", add_special_tokens=False).ids
        self.anchor_ids = anchor[-1:]  # a plain token, decoded before the ids
        self.anchor_text = self.tokenizer_file.decode(self.anchor_ids)

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, with the tokenizer's special tokens."""
        return self.tokenizer_file.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` as a continuation: a word keeps its leading space."""
        text = self.tokenizer_file.decode(self.anchor_ids + list(ids))
        return text.removeprefix(self.anchor_text)

    def to_dict(self) -> dict:
        """Where the tokenizer comes from: its file (not for tokenizer_from_dict)."""
        return {"tokenizer_json": str(self.path), "eot_id": self.eot_id}


LOADERS = {"gpt2": load_gpt2, "llama": load_llama}  # config.json's model_type -> loader


def download_pretrained(name: str) -> Path:
    """Download (or find in the local cache) a checkpoint from the Hugging Face Hub.

    Args:
        name: A hub repository, such as ``"HuggingFaceTB/SmolLM2-135M"``.

    Returns:
        The directory of the checkpoint.

    Raises:
        ValueError: If ``huggingface_hub`` is missing or the download fails (offline,
            unknown name).
    """
    files = [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "model-*.safetensors",
    ]
    local_dir = name.split("/")[-1]
    how_to = (
        f"download it once where there is a network, e.g. `hf download {name} "
        f"config.json tokenizer.json model.safetensors --local-dir {local_dir}`, "
        f"then pass --hf {local_dir}"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ValueError(
            f"{name!r} is not a local directory, and downloading it needs "
            "huggingface_hub "
            f'(pip install "tinytransformer[gpt2]"); or {how_to}'
        ) from error
    try:
        return Path(snapshot_download(name, allow_patterns=files))
    except (
        OSError,
        ValueError,
    ) as error:  # offline, not cached, unknown repository, invalid name
        raise ValueError(
            f"could not get {name!r} from the Hugging Face Hub "
            f"({type(error).__name__}); "
            f"{how_to}"
        ) from error


def load_pretrained(source: str | PathLike) -> tuple[GPT, PretrainedTokenizer]:
    """A GPT-2 or Llama checkpoint and its tokenizer, by ``model_type`` in config.json.

    Args:
        source: A pretrained directory (``config.json``, weights, ``tokenizer.json``)
            or a Hugging Face Hub name; a local directory of that name is tried first.

    Returns:
        ``(model, tokenizer)``: the model in float32 on the CPU, in evaluation mode.

    Raises:
        FileNotFoundError: If the directory or one of its files is missing.
        ValueError: If the ``model_type`` is neither ``"gpt2"`` nor ``"llama"``, the
            checkpoint cannot be represented, or a download fails.
    """
    directory = Path(source)
    if (
        not directory.exists()
        and isinstance(source, str)
        and HUB_NAME.fullmatch(source)
    ):
        directory = download_pretrained(source)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a pretrained directory "
            "(config.json, model.safetensors, "
            "tokenizer.json)"
        )
    settings = read_config(directory)
    model_type = settings.get("model_type")
    if model_type not in LOADERS:
        raise ValueError(
            f"{directory / 'config.json'} has model_type {model_type!r}; "
            f"--hf loads {' and '.join(map(repr, LOADERS))} checkpoints"
        )
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(
            f"{tokenizer_file} not found; --hf uses the checkpoint's own tokenizer"
        )
    eos = settings.get("eos_token_id")
    eot_id = (
        eos[0]
        if isinstance(eos, list) and eos
        else eos
        if isinstance(eos, int)
        else None
    )
    return LOADERS[model_type](directory), PretrainedTokenizer(tokenizer_file, eot_id)
