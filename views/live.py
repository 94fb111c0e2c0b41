"""Live comparison: upload an image, compress it with chosen codecs at a setting or a target bpp."""
import hashlib

import streamlit as st

from core.dashboard import imaging, live
from views import _ui

st.title("Live comparison")
st.caption(f"PNG, TIFF, JPEG, PGM/PPM; 8- or 16-bit; gray or RGB. Limits for live encoding: ≤ "
           f"{live.MAX_UPLOAD_BYTES // 2**20} MB and ≤ {live.MAX_UPLOAD_SIDE}×{live.MAX_UPLOAD_SIDE} pixels.")

upload = st.file_uploader("Image", type=list(live.UPLOAD_TYPES), key="live_upload")
o1, o2 = st.columns(2)
declared = o1.selectbox("Significant bits (16-bit files)", ["auto"] + list(range(16, 8, -1)), key="live_bits",
                        help="e.g. 12 for 12-bit camera data stored in 16 bits; auto = the container depth")
page = o2.number_input("Page (multi-page TIFF stacks)", min_value=0, value=0, step=1, key="live_page")
if upload is None:
    st.info("Upload an image to start.")
    st.stop()

data = upload.getvalue()
try:
    image = live.read_upload(data, upload.name, None if declared == "auto" else int(declared), int(page))
except live.UploadError as exc:
    st.error(f"Cannot use this file: {exc}" + (" — choose the plane with *Page* above." if "page" in str(exc)
                                                 else ""))
    st.stop()

st.write(f"**{upload.name}**: {image.width}×{image.height} px, {image.channels} channel(s), "
         f"{image.bit_depth}-bit, {len(data):,} bytes on disk.")
view_o, note = imaging.window_to_8bit(image.pixels, image.bit_depth)

mode = "joint"
if image.channels == 3:
    mode = st.radio("Colour mode", ["joint", "per_channel"], key="live_mode", horizontal=True,
                    format_func={"joint": "joint (3-channel learned models, codecs see RGB)",
                                 "per_channel": "per channel (each channel coded as gray, 1-channel models)"}.get)
else:
    st.caption("Grayscale upload: learned codecs use their 1-channel models.")
supported = live.codecs_for_image(image.bit_depth, image.channels, mode)
defaults = [c for c in ("jpeg2000", "jpegxl", "jpeg") if c in supported][:2] or supported[:1]
chosen = st.multiselect("Codecs", supported, default=defaults, key="live_codecs",
                        help=f"Codecs that support {image.bit_depth}-bit, "
                             f"{'1' if mode == 'per_channel' or image.channels == 1 else '3'}-channel input")

target = st.radio("Target", ["setting", "bpp"], key="live_target", horizontal=True,
                  format_func={"setting": "quality setting per codec", "bpp": "target bits per pixel"}.get)
settings = {}
if target == "setting":
    for name in chosen:
        c = _ui.codec(name)
        if c.lossless:
            settings[name] = None
        else:
            options = list(c.default_settings)
            settings[name] = st.select_slider(f"{name}: {c.knob}", options, value=options[len(options) // 2],
                                              key=f"live_set_{name}")
else:
    target_bpp = st.number_input("Target bpp", min_value=0.01, max_value=48.0, value=1.0, step=0.1,
                                 key="live_bpp", help="each codec's knob is bisected within its default range")

job = (hashlib.sha256(data).hexdigest(), image.bit_depth, mode, tuple(chosen), target,
       tuple(sorted((k, str(v)) for k, v in settings.items())) if target == "setting" else target_bpp)
if st.button("Compress", type="primary", key="live_run", disabled=not chosen):
    results = {}
    bar = st.progress(0.0, text="Compressing…")
    for i, name in enumerate(chosen):
        bar.progress(i / len(chosen), text=f"{name} ({i + 1}/{len(chosen)})…")
        try:
            found = live.live_compress(image, _ui.codec(name), mode, settings.get(name),
                                       target_bpp if target == "bpp" else None)
            results[name] = {"evaluation": found.evaluation, "note": found.note}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    bar.progress(1.0, text="Done")
    st.session_state["live_results"] = (job, results)

if st.session_state.get("live_results", (None,))[0] != job:
    st.image(view_o, caption=f"original — {note}", output_format="PNG")
    st.stop()

results = st.session_state["live_results"][1]
ok = {n: r for n, r in results.items() if "evaluation" in r}
for name, r in results.items():
    if "error" in r:
        st.error(f"{name}: {r['error']}")
if ok:
    st.subheader("Results")
    st.dataframe([live.live_row(n, mode, r["evaluation"]) for n, r in ok.items()], hide_index=True,
                 key="live_table")
    st.caption("bytes = complete encoded file; bpp = 8·bytes/(H·W); ratio = bytes/raw bytes; factor = raw/bytes; "
               "PSNR with MAX = 2^bit_depth − 1; times in seconds (wall clock).")
cols = st.columns(min(3, len(ok) + 1))
width = min(image.width, 640)  # natural size up to 640 px (enlarge with the browser, or see Side by side)
cols[0].image(view_o, caption=f"original — {note}", output_format="PNG", width=width)
for i, (name, r) in enumerate(ok.items(), start=1):
    col = cols[i % len(cols)]
    ev = r["evaluation"]
    view_r, _ = imaging.window_to_8bit(ev.reconstruction, image.bit_depth, reference=image.pixels)
    col.image(view_r, caption=f"{name} @ {ev.metrics['setting']}: {ev.metrics['bpp']:.3f} bpp, "
                              f"PSNR {ev.metrics['psnr']:.2f} dB", output_format="PNG", width=width)
    if r["note"]:
        col.caption(r["note"])
    stem = upload.name.rsplit(".", 1)[0]
    col.download_button(f"Download {name} file ({len(ev.encoded):,} bytes)", ev.encoded,
                        file_name=f"{stem}_{name}_{ev.metrics['setting']}{live.encoded_suffix(name)}",
                        key=f"live_dl_enc_{name}", on_click="ignore")
    col.download_button(f"Download {name} reconstruction (PNG)", imaging.png_bytes(ev.reconstruction),
                        file_name=f"{stem}_{name}_{ev.metrics['setting']}_reconstruction.png", mime="image/png",
                        key=f"live_dl_png_{name}", on_click="ignore")
