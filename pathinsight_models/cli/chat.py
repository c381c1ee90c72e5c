"""`pathinsight chat`: ask a model about an image (see `pathinsight_models.chat`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add `pathinsight chat`."""
    from pathinsight_models import chat
    from pathinsight_models.knowledge.retrieval import KINDS

    from .argtypes import int_at_least

    p = subparsers.add_parser("chat", help="ask a model about an image (adapter, merged or full; Hub id or dir)",
                              description=chat.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hub id or local directory")
    p.add_argument("--image", type=Path, help="image file (omit for a text-only question)")
    p.add_argument("--question", help="question to ask (omit to read questions from standard input)")
    p.add_argument("--revision", help="Hub revision of --model")
    p.add_argument("--max-new-tokens", type=int, default=chat.DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--knowledge", type=Path, metavar="K",
                   help="knowledge dataset from `pathinsight knowledge build`: put its most similar training cases "
                        "(image + label) into the prompt (models that take several images)")
    p.add_argument("--retrieve", type=int_at_least(1), metavar="N",
                   help="number of similar cases with --knowledge (default 3)")
    p.add_argument("--index", choices=KINDS, default="embedding",
                   help="similarity for --knowledge: embedding (the GNN's, default) or quadrant (GFT's 8 numbers)")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    """`pathinsight chat`: answer one question, or questions read from standard input."""
    from pathenhanceds.errors import InputError
    from pathinsight_models.chat import answer, check_several_images, load, open_image

    if args.retrieve is not None and args.knowledge is None:
        raise InputError("--retrieve needs --knowledge K", fix="pass --knowledge K (a `pathinsight knowledge build` folder)")
    if args.knowledge is not None and args.image is None:
        raise InputError("--knowledge retrieves cases similar to an image", fix="pass --image")
    image = open_image(args.image)  # check the image before loading a model
    retriever = None
    if args.knowledge is not None:
        from pathinsight_models.knowledge.retrieval import CaseRetriever

        retriever = CaseRetriever(args.knowledge, args.index)  # a bad K fails before the model loads
    model, processor = load(args.model, revision=args.revision, device=args.device)
    cases = None
    if retriever is not None:
        k = args.retrieve or 3
        check_several_images(processor, k + 1, args.model)
        cases = retriever.search(image, k)
        rates = ", ".join(f"{kind} {rate:.3f}" for kind, rate in retriever.hit_rates.items())
        print(f"similar training cases ({args.index} index): "
              + "; ".join(f"{c['id']} ({c['label']})" for c in cases), file=sys.stderr)
        print(f"nearest-neighbour label hit rate at build ({retriever.hit_rate_split}): {rates}", file=sys.stderr)
    if args.question is not None:
        print(answer(model, processor, image, args.question, args.max_new_tokens, cases=cases))
        return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("question> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or (interactive and not line.strip()):
            return 0
        if line.strip():
            print(answer(model, processor, image, line, args.max_new_tokens, cases=cases), flush=True)
