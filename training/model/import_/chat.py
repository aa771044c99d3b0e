"""The sources' chat formats as chat templates over our template-form messages.

Content is a string or a list of `text` / `image` parts (service/core/chat_format.py);
an image part renders as the image token and a newline, where LLaVA and xtuner
put `<image>\\n` in the user turn. BOS is not in the templates: the tokenizer
adds it when the source's did, so it is never doubled.

- `internlm2-chatml`: xtuner's `internlm2_chat` (GMAI-VL):
  `<|im_start|>role\\n...<|im_end|>\\n`, generation prompt `<|im_start|>assistant\\n`.
- `llava-v1`: LLaVA-1.5's `conv_llava_v1` (vicuna): `SYSTEM USER: <image>\\n... ASSISTANT:`,
  an answer ends with `</s>`.
- `mistral-instruct`: LLaVA's `conv_mistral_instruct` (LLaVA-Med v1.5):
  `[INST] <image>\\n... [/INST]`, an answer is ` text </s>`; a system message is
  wrapped in `<<SYS>>` inside the first turn (LLaMA-2 style).
"""

from __future__ import annotations

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

_CONTENT = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] in ('image', 'image_url') %}{{ IMAGE + '\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)

INTERNLM2_CHATML = (
    _CONTENT + "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{{ render(message['content']) }}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAVA_V1 = (
    _CONTENT + "{% set ns = namespace(system=SYSTEM) %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system = render(message['content']) %}{% endif %}{% endfor %}"
    "{{ ns.system + ' ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + render(message['content']) + ' ' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'ASSISTANT: ' + render(message['content']) + '</s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

MISTRAL_INSTRUCT = (
    _CONTENT + "{% set ns = namespace(system='', first=true) %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system = '<<SYS>>\n' + render(message['content']) + '\n<</SYS>>\n\n' %}"
    "{% endif %}{% endfor %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (ns.system if ns.first else '') + render(message['content']) + ' [/INST]' }}"
    "{% set ns.first = false %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + render(message['content']) + ' </s>' }}{% endif %}"
    "{% endfor %}"
)

TEMPLATES = {
    "internlm2-chatml": INTERNLM2_CHATML,
    "llava-v1": LLAVA_V1,
    "mistral-instruct": MISTRAL_INSTRUCT,
}


def chat_template(name: str, image_token: str) -> str:
    """The named template with its image token (and LLaVA's system prompt) filled in."""
    template = TEMPLATES[name]
    head = "{% set IMAGE = " + repr(image_token) + " %}"
    if name == "llava-v1":
        head += "{% set SYSTEM = " + repr(LLAVA_V1_SYSTEM) + " %}"
    return head + template
