"""Bridges to training frameworks other than olsmooth's own loop; each needs its framework (an optional extra)."""
