"""What one simulated model server is: its model, adapters, capacity, latency model and faults."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

ERROR_CODES = (429, 500, 503)
# Names travel in CSV metric labels (running_lora_adapters) and URLs: no commas, quotes, spaces.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
_NAME_RULE = "must be letters, digits and . _ : / @ + - (starting with a letter or digit)"


class SimConfigError(ValueError):
    """A simulator setting that cannot work; the message names the setting and what it needs."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One replica's settings (every replica of ``start_sims`` shares them).

    Durations are in milliseconds of the simulated GPU; ``time_scale`` multiplies all of them.
    The defaults are an 8B model on one H100 (llm-d-inference-sim's latency profiles).
    """

    model: str = "llama-3-8b"
    loras: tuple[str, ...] = ()
    host: str = "127.0.0.2"
    port: int = 8000
    max_num_seqs: int = 16
    max_loras: int = 1
    lora_load_ms: float = 25.0
    kv_blocks: int = 1024
    block_size: int = 16
    prefill_overhead_ms: float = 30.0
    prefill_ms_per_token: float = 0.2
    itl_ms: float = 12.0
    itl_load_factor: float = 1.0
    jitter: float = 0.1
    seed: int = 0
    time_scale: float = 1.0
    output_tokens: tuple[int, int] = (16, 256)
    error_rate: float = 0.0
    error_codes: tuple[int, ...] = (429, 500)
    stall_rate: float = 0.0
    stall_ms: float = 1000.0
    # Per served model (the base or an adapter): a delay before its requests reach the engine
    # (ms, like the others scaled by time_scale) and an error rate on top of error_rate, so one
    # version of a canary can be slower or fail more on the same replicas.
    model_delay_ms: tuple[tuple[str, float], ...] = ()
    model_error_rate: tuple[tuple[str, float], ...] = ()
    # Answers are planned from the request's model name unless this names another model: a canary
    # of stable's weights under a new name answers as stable does.
    answers_of: str = ""
    answer_variant: float = 0.0  # share of prompts answered with other words (fixed per prompt)

    def __post_init__(self) -> None:
        positive_ints = ("max_num_seqs", "max_loras", "kv_blocks", "block_size")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise SimConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        non_negative = (
            "lora_load_ms",
            "prefill_overhead_ms",
            "prefill_ms_per_token",
            "itl_ms",
            "itl_load_factor",
            "jitter",
            "stall_ms",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SimConfigError(f"{name}: must be 0 or more, got {getattr(self, name)}")
        for name in ("error_rate", "stall_rate", "answer_variant"):
            if not 0 <= getattr(self, name) <= 1:
                raise SimConfigError(
                    f"{name}: must be a fraction in [0, 1], got {getattr(self, name)}"
                )
        if self.time_scale <= 0:
            raise SimConfigError(f"time_scale: must be more than 0, got {self.time_scale}")
        low, high = self.output_tokens
        if not 1 <= low <= high:
            raise SimConfigError(f"output_tokens: needs 1 <= MIN <= MAX, got {low}:{high}")
        if not self.error_codes or any(code not in ERROR_CODES for code in self.error_codes):
            raise SimConfigError(
                f"error_codes: each must be one of {', '.join(map(str, ERROR_CODES))}, "
                f"got {','.join(map(str, self.error_codes)) or 'none'}"
            )
        if not _NAME.fullmatch(self.model):
            raise SimConfigError(f"model: {self.model!r} {_NAME_RULE}")
        if self.answers_of and not _NAME.fullmatch(self.answers_of):
            raise SimConfigError(f"answers_of: {self.answers_of!r} {_NAME_RULE}")
        names = [self.model, *self.loras]
        for field, pairs, fraction in (
            ("model_delay_ms", self.model_delay_ms, False),
            ("model_error_rate", self.model_error_rate, True),
        ):
            for name, value in pairs:
                if name not in names:
                    raise SimConfigError(
                        f"{field}: {name!r} is not served (model {self.model!r}, "
                        f"adapters {', '.join(self.loras) or 'none'})"
                    )
                if value < 0 or (fraction and value > 1):
                    expected = "a fraction in [0, 1]" if fraction else "0 or more"
                    raise SimConfigError(f"{field}: {name}={value} must be {expected}")
        for name in self.loras:
            if not _NAME.fullmatch(name):
                raise SimConfigError(f"loras: {name!r} {_NAME_RULE}")
            if names.count(name) > 1:
                raise SimConfigError(f"loras: {name!r} repeats the model or another adapter")

    def model_delay_of(self, model: str) -> float:
        """Seconds (after time_scale) ``model``'s requests wait before the engine."""
        return dict(self.model_delay_ms).get(model, 0.0) * self.time_scale / 1000

    def model_error_rate_of(self, model: str) -> float:
        """The extra error rate of ``model``'s requests."""
        return dict(self.model_error_rate).get(model, 0.0)

    @property
    def max_model_len(self) -> int:
        """The longest prompt + output a request may have: the whole KV cache."""
        return self.kv_blocks * self.block_size

    def replica_host(self, index: int) -> str:
        """The address of replica ``index``: ``host`` plus ``index`` (127.0.0.2, 127.0.0.3, ...)."""
        if index == 0:
            return self.host
        try:
            first = ipaddress.IPv4Address(self.host)
        except ValueError:
            raise SimConfigError(
                f"host: replicas need an IPv4 address to count up from, got {self.host!r}"
            ) from None
        try:
            return str(first + index)
        except ipaddress.AddressValueError:
            raise SimConfigError(
                f"host: {self.host} plus {index} runs past 255.255.255.255"
            ) from None
