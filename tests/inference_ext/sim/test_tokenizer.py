"""The fake tokenizer: 4 characters a token, chained block hashes keyed by model or adapter."""

from __future__ import annotations

from inference_ext.sim.tokenizer import (
    VOCAB,
    count_tokens,
    output_text,
    render_chat,
    text_prompt,
    token_prompt,
)


def test_a_token_is_four_characters_rounded_up() -> None:
    assert [count_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    assert count_tokens("ü" * 8) == 2  # characters, not bytes


def test_only_full_blocks_are_hashed() -> None:
    assert len(text_prompt("x" * 63, "m", 16).block_hashes) == 0
    prompt = text_prompt("x" * 200, "m", 16)
    assert (prompt.tokens, len(prompt.block_hashes)) == (50, 3)
    assert len(token_prompt(list(range(40)), "m", 16).block_hashes) == 2


def test_block_hashes_chain_so_a_block_depends_on_everything_before_it() -> None:
    text = "".join(chr(65 + i % 26) for i in range(64 * 4))
    base = text_prompt(text, "m", 16).block_hashes
    same_prefix = text_prompt(text[: 64 * 2] + "z" * 64 * 2, "m", 16).block_hashes
    assert same_prefix[:2] == base[:2] and same_prefix[2:] != base[2:]
    changed_head = text_prompt("!" + text[1:], "m", 16).block_hashes
    assert not set(changed_head) & set(base)  # block 3 is the same text, but not the same hash
    assert not set(text_prompt(text, "adapter", 16).block_hashes) & set(base)


def test_generated_words_are_one_token_each_and_render_back_to_the_same_count() -> None:
    assert all(len(word) == 4 and count_tokens(word) == 1 for word in VOCAB)
    assert count_tokens(output_text(3, 5, 37)) == 37


def test_the_chat_template_keeps_earlier_turns_a_prefix_of_later_prompts() -> None:
    first = render_chat([("system", "be brief"), ("user", "hi")])
    later = render_chat(
        [("system", "be brief"), ("user", "hi"), ("assistant", "yo"), ("user", "?")]
    )
    assert later.startswith(first.removesuffix("<|assistant|>\n"))
    assert first == "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
