"""`pathinsight chat`: ask a model about an image (see `pathinsight_models.chat`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add `pathinsight chat`."""
    from pathinsight_models import chat

    p = subparsers.add_parser("chat", help="ask a model about an image (adapter, merged or full; Hub id or dir)",
                              description=chat.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hub id or local directory")
    p.add_argument("--image", type=Path, help="image file (omit for a text-only question)")
    p.add_argument("--question", help="question to ask (omit to read questions from standard input)")
    p.add_argument("--revision", help="Hub revision of --model")
    p.add_argument("--max-new-tokens", type=int, default=chat.DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    """`pathinsight chat`: answer one question, or questions read from standard input."""
    from pathinsight_models.chat import answer, load, open_image

    image = open_image(args.image)  # check the image before loading a model
    model, processor = load(args.model, revision=args.revision, device=args.device)
    if args.question is not None:
        print(answer(model, processor, image, args.question, args.max_new_tokens))
        return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("question> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or (interactive and not line.strip()):
            return 0
        if line.strip():
            print(answer(model, processor, image, line, args.max_new_tokens), flush=True)
