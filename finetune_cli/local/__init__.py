"""``finetune local``: a team stage on this machine, from its synthesized cloud assembly."""
