"""Renderers of a run: each reads trace.jsonl and nothing else (issue 4). Today: ladder.svg."""
