"""The command line's conditioning flags (`kvae.cli` is kept short): `kvae prior fit --condition SOURCE`,
`kvae generate --condition VALUE --guidance G`."""


def add_condition_args(parser, generate=False):
    """Add `--condition` (and for `generate`, `--guidance`) to a subcommand's parser."""
    if not generate:
        parser.add_argument("--condition", metavar="SOURCE",
                            help="fit a prior conditioned on a label per recording: a metadata column of a MusicNet "
                                 "layout (composer, ensemble, ...), file (each recording), or a CSV of file,label "
                                 "(prior.condition)")
        return
    parser.add_argument("--condition", metavar="VALUE",
                        help="generate in this label of a prior fitted with --condition (default: unconditional)")
    parser.add_argument("--guidance", type=float, default=1.0, metavar="G",
                        help="classifier-free guidance scale: a conditioned prior towards its label, a chunk "
                             "prior towards its context (default 1: as trained)")


def condition_settings(args, settings):
    """`kvae prior fit`'s settings with `--condition` in them."""
    if getattr(args, "condition", None) is not None:
        settings.setdefault("prior", {})["condition"] = args.condition
    return settings


def condition_options(args):
    """`kvae generate`'s keywords of `generate` for `--condition` and `--guidance`."""
    return {"condition": args.condition, "guidance": args.guidance}
