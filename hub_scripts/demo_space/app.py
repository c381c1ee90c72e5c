"""Chat demo Space: upload a histopathology image, ask a question, read the model's answer.

Works with adapter repos (base model fetched from `adapter_config.json`), merged and full repos:
`pathinsight_models.chat.load` + `answer`, i.e. the greedy decoding `pathinsight eval` uses. The
Gradio API endpoint is `/answer` (image, question) -> answer, e.g. with `gradio_client`.

Run locally: `PATHINSIGHT_MODEL=my-lab/llava-pathology-lora python hub_scripts/demo_space/app.py`.
In a Space, set the variable PATHINSIGHT_MODEL (and the secret HF_TOKEN for a private model).
"""

from __future__ import annotations

import os

# Gradio reads these when imported: no usage analytics, no version check against its servers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from pathenhanceds.errors import InputError  # noqa: E402
from pathinsight_models.chat import answer, load  # noqa: E402
from pathinsight_models.publish.model_card import NOT_FOR_CLINICAL_USE  # noqa: E402

EXAMPLE_QUESTIONS = [
    "What type of tissue is shown in this image?",
    "Is there tumour tissue in this patch? Answer yes or no.",
    "Describe the histopathology image.",
]


def build_app(model_id: str, *, revision: str | None = None, max_new_tokens: int = 128,
              model_and_processor: tuple[Any, Any] | None = None) -> gr.Blocks:
    """The demo for `model_id`; the model is loaded once (or pass an already loaded `(model, processor)`)."""
    model, processor = model_and_processor or load(model_id, revision=revision)

    def respond(image: Any, question: str) -> str:
        try:
            return answer(model, processor, image, question, max_new_tokens=max_new_tokens)
        except InputError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title=f"PathInsight chat: {model_id}", analytics_enabled=False) as demo:
        gr.Markdown(f"# PathInsight chat\nModel: `{model_id}`. Upload an H&E image and ask about it.\n\n"
                    f"{NOT_FOR_CLINICAL_USE}")
        with gr.Row():
            image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"])
            with gr.Column():
                question = gr.Textbox(label="Question", value=EXAMPLE_QUESTIONS[0], lines=2)
                ask = gr.Button("Ask", variant="primary")
                reply = gr.Textbox(label="Answer", lines=6, interactive=False)
        gr.Examples([[None, q] for q in EXAMPLE_QUESTIONS], inputs=[image, question])
        ask.click(respond, [image, question], reply, api_name="answer")
        question.submit(respond, [image, question], reply, api_name=False)
    return demo


if __name__ == "__main__":
    model_name = os.environ.get("PATHINSIGHT_MODEL")
    if not model_name:
        raise SystemExit("set PATHINSIGHT_MODEL=ORG/NAME (an adapter, merged or full PathInsight model)")
    build_app(model_name, revision=os.environ.get("PATHINSIGHT_REVISION")).launch(share=False)
