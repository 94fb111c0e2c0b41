"""Print the validation table of the shipped learned-codec checkpoints (markdown), from their JSON metadata.

    .venv/bin/python scripts/weights_table.py [data/weights]

Every number comes from the ``validation`` block core.train writes: real bitstreams (header included) on the
catalog ``val`` images, means over the images; encode/decode are wall seconds on one CPU thread.
"""
import json
import sys
from pathlib import Path

def lam(value) -> str:
    """λ, or the ends of a variable-rate model's λ ladder."""
    return f"{value[0]:.3g}–{value[-1]:.3g} ({len(value)} levels)" if isinstance(value, list) else f"{value:g}"


folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "data" / "weights")
for meta_path in sorted(folder.glob("*.json")):
    meta = json.loads(meta_path.read_text())
    if not meta.get("codec") or "validation" not in meta:
        continue
    v = meta["validation"]
    points = v.get("settings") or [dict(v, setting=meta.get("quality"))]
    print(f"\n**`{meta['model_id']}`** ({meta['codec']}, {meta['channels']} channel{'s' * (meta['channels'] > 1)}, "
          f"{meta['arch']}, loss {meta['loss']}, λ {lam(meta['lmbda'])}, "
          f"{meta['steps']['total']:,} steps, {meta.get('train_seconds', meta.get('train_seconds_this_session', 0)) / 60:.0f} min; "
          f"validated on {', '.join(meta.get('validation_data', []))})\n")
    print("| setting | bpp | PSNR (dB) | MS-SSIM | encode (s) | decode (s) |")
    print("|---|---|---|---|---|---|")
    for p in points:
        print(f"| {p['setting']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} | {p['encode_s']:.2f} | "
              f"{p['decode_s']:.2f} |")
