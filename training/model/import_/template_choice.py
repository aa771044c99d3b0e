"""Which chat template an import writes, and why; checked before a tensor is read.

1. `--chat-template NAME|FILE`: one of ours (chat.py) or a Jinja file, over anything.
2. The source's own template, carried over as it is: `chat_template.jinja`,
   `chat_template.json` (a processor's) or `tokenizer_config.json`'s `chat_template`
   (its `default` when it is a list of named templates), looked for in the
   source directory and then the tokenizer's.
3. The format's default (chat.py), when the source has none, or when the source's
   is a text-only LLM template: served requests carry image parts, and a template
   that does not render one as the image token cannot serve them. The record says so.

Every template is rendered once on a probe chat (system, user with an image,
assistant, user, generation prompt) through the tokenizer. Every special token it
writes (`<|...|>`, `<s>`-like markers) must be one token of the tokenizer, or the
import is refused naming the token. The end-of-turn token (the serving stop token)
is the first marker after the assistant's answer, else the tokenizer's EOS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from training.model.import_.chat import TEMPLATES, chat_template
from training.model.import_.formats import ImportFormatError, read_json

SOURCE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
# Special-token-like markers: `<|im_end|>`, `<s>`, `</s>`, `<image>`, `<end_of_turn>`;
# not LLaMA-2's `<<SYS>>` (plain text to its tokenizer).
MARKER = re.compile(r"<\|[^\s<>|]+\|>|(?<!<)</?[A-Za-z_][\w.:-]*>(?!>)")
SYSTEM, QUESTION, ANSWER, FOLLOW_UP = "PROBESYSTEM", "PROBEQUESTION", "PROBEANSWER", "PROBEFOLLOWUP"


@dataclass(frozen=True)
class ChatTemplate:
    text: str  # the Jinja template written to the checkpoint
    origin: str  # "option" | "source" | "format default"
    name: str | None  # one of chat.TEMPLATES, or None for a source's or a file's
    file: str | None  # where a source's or an option's template was read
    reason: str
    end_of_turn: str

    def record(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "name": self.name,
            "file": self.file,
            "reason": self.reason,
            "end_of_turn": self.end_of_turn,
        }

    def describe(self) -> str:
        return f"{self.name or self.file} ({self.reason})"


def probe_chat(system: bool) -> list[dict[str, Any]]:
    """Template form (service/core/chat_format.py), as both engines pass it."""
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
        {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]},
    ]
    if system:
        chat.insert(0, {"role": "system", "content": [{"type": "text", "text": SYSTEM}]})
    return chat


def render_probe(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    """The probe chat rendered; a template that refuses a system turn gets none."""
    error: Exception | None = None
    for system in (True, False):
        try:
            return str(
                tokenizer.apply_chat_template(
                    probe_chat(system),
                    chat_template=template,
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        except Exception as exc:  # a template's own raise_exception, a TypeError, ...
            error = exc
    raise ValueError(f"it does not render a chat ({error})")


def probe(tokenizer: PreTrainedTokenizerBase, image_token: str, template: str) -> str:
    """The probe chat rendered; ValueError when the template cannot serve an image chat."""
    rendered = render_probe(tokenizer, template)
    if rendered.count(image_token) != 1 or not all(
        text in rendered for text in (QUESTION, ANSWER, FOLLOW_UP)
    ):
        raise ValueError(f"it is text-only: an image part does not render as {image_token}")
    return rendered


def end_of_turn(rendered: str, tokenizer: PreTrainedTokenizerBase) -> str:
    after = rendered[rendered.index(ANSWER) + len(ANSWER) : rendered.index(FOLLOW_UP)]
    found = MARKER.search(after)
    if found:
        return found.group(0)
    if tokenizer.eos_token is None:
        raise ImportFormatError("the chat template ends no turn with a token and there is no EOS")
    return str(tokenizer.eos_token)


def tokens_checked(rendered: str, tokenizer: PreTrainedTokenizerBase, where: str) -> str:
    """The end-of-turn token; a token the template needs and the tokenizer lacks is refused."""
    eot = end_of_turn(rendered, tokenizer)
    vocab = tokenizer.get_vocab()
    for token in [*dict.fromkeys(MARKER.findall(rendered)), eot]:
        if token not in vocab:
            raise ImportFormatError(
                f"the chat template {where} needs the token {token}, which the tokenizer "
                "lacks; give --chat-template with one it has"
            )
    return eot


def checked(tokenizer: PreTrainedTokenizerBase, image_token: str, template: str, where: str) -> str:
    """The end-of-turn token of a template we were told to use: it must serve."""
    try:
        rendered = probe(tokenizer, image_token, template)
    except ValueError as exc:
        raise ImportFormatError(f"the chat template {where} cannot serve: {exc}") from exc
    return tokens_checked(rendered, tokenizer, where)


def source_template(directories: list[Path]) -> tuple[str, str] | None:
    """(template, file name) of the first directory that ships one."""
    for directory in dict.fromkeys(directories):
        for name in SOURCE_FILES:
            path = directory / name
            if not path.is_file():
                continue
            if name.endswith(".jinja"):
                return path.read_text(), name
            value = read_json(path).get("chat_template")
            if isinstance(value, list):  # named templates: the default one
                value = next((t.get("template") for t in value if t.get("name") == "default"), None)
            if isinstance(value, str) and value.strip():
                return value, name
    return None


def option_template(option: str, image_token: str) -> tuple[str, str | None, str | None]:
    """(text, name, file) of a `--chat-template` value: a name of ours or a Jinja file."""
    if option in TEMPLATES:
        return chat_template(option, image_token), option, None
    path = Path(option)
    if path.is_file():
        return path.read_text(), None, str(path)
    raise ImportFormatError(
        f"unknown chat template {option!r}: one of {', '.join(TEMPLATES)}, or a Jinja file"
    )


def choose(
    option: str | None,
    directories: list[Path],
    default: str,
    tokenizer: PreTrainedTokenizerBase,
    image_token: str,
) -> ChatTemplate:
    """The template to write (see the module docstring), checked against the tokenizer."""
    if option is not None:
        text, name, file = option_template(option, image_token)
        eot = checked(tokenizer, image_token, text, f"--chat-template {option}")
        return ChatTemplate(text, "option", name, file, "given with --chat-template", eot)
    found = source_template(directories)
    reason = "the source has no chat template"
    if found is not None:
        text, file = found
        try:
            rendered = probe(tokenizer, image_token, text)
        except ValueError as exc:
            reason = f"the source's template ({file}) cannot serve: {exc}"
        else:
            eot = tokens_checked(rendered, tokenizer, f"of the source ({file})")
            return ChatTemplate(text, "source", None, file, "the source's own", eot)
    text = chat_template(default, image_token)
    eot = checked(tokenizer, image_token, text, f"{default} (the format's default)")
    return ChatTemplate(text, "format default", default, None, reason, eot)
