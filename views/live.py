"""Live comparison: upload an image, compress it with chosen codecs at a setting or a target bpp, and compare
the reconstructions pixel for pixel (split view, 1:1 panels, difference maps)."""
import streamlit as st

from core.dashboard import compare, imaging, live
from views import _ui

st.title("Live comparison")
st.caption(f"PNG, TIFF, JPEG, PGM/PPM; 8- or 16-bit; gray or RGB. Limits for live encoding: ≤ "
           f"{live.MAX_UPLOAD_BYTES // 2**20} MB and ≤ {live.MAX_UPLOAD_SIDE}×{live.MAX_UPLOAD_SIDE} pixels. "
           "Large images are coded tile by tile, as the runner codes them.")

upload = st.file_uploader("Image", type=list(live.UPLOAD_TYPES), key="live_upload")
o1, o2 = st.columns(2)
declared = o1.selectbox("Significant bits (16-bit files)", ["auto"] + list(range(16, 8, -1)), key="live_bits",
                        help="e.g. 12 for 12-bit camera data stored in 16 bits; auto = the container depth")
page = o2.number_input("Page (multi-page TIFF stacks)", min_value=0, value=0, step=1, key="live_page")
if upload is None:
    st.info("Upload an image to start.")
    st.stop()

data = upload.getvalue()
upload_key = live.upload_key(data)
bits = None if declared == "auto" else int(declared)
try:
    image = _ui.read_upload(upload_key, upload.name, bits, int(page), _data=data)
except live.UploadError as exc:
    st.error(f"Cannot use this file: {exc}" + (" — choose the plane with *Page* above." if "page" in str(exc)
                                                 else ""))
    st.stop()
image_key = ("upload", upload_key, image.bit_depth, int(page))

st.write(f"**{upload.name}**: {image.width}×{image.height} px, {image.channels} channel(s), "
         f"{image.bit_depth}-bit, {len(data):,} bytes on disk.")

mode = "joint"
if image.channels == 3:
    mode = st.radio("Colour mode", ["joint", "per_channel"], key="live_mode", horizontal=True,
                    format_func={"joint": "joint (3-channel learned models, codecs see RGB)",
                                 "per_channel": "per channel (each channel coded as gray, 1-channel models)"}.get)
else:
    st.caption("Grayscale upload: learned codecs use their 1-channel models.")
supported = live.codecs_for_image(image.bit_depth, image.channels, mode)
defaults = live.default_codecs(supported)
chosen = st.multiselect("Codecs", supported, default=defaults, key="live_codecs",
                        help=f"Codecs that support {image.bit_depth}-bit, "
                             f"{'1' if mode == 'per_channel' or image.channels == 1 else '3'}-channel input")

target = st.radio("Target", ["bpp", "setting"], key="live_target", horizontal=True,
                  format_func={"setting": "quality setting per codec",
                               "bpp": "target bits per pixel (matched rate)"}.get)
settings = {}
target_bpp = None
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
    target_bpp = float(st.number_input(
        "Target bpp", min_value=0.01, max_value=48.0, value=0.5, step=0.1, key="live_bpp",
        help="Each codec gets the setting whose achieved rate is closest to the target (bisection on its knob; "
             "continuous for variable-rate learned codecs), reported with its deviation"))


def job(name: str) -> dict:
    """One coding job: its cache key (upload hash, depth, page, colour mode, codec, setting or target)."""
    codec = _ui.codec(name)
    how = ("bpp", round(target_bpp, 6)) if target == "bpp" else ("setting", str(settings.get(name)))
    return {"name": name, "key": image_key + (mode, name) + how,
            "expected": live.expected_trials(codec, target_bpp),
            "make": lambda on_trial: live.live_compress(image, codec, mode, settings.get(name), target_bpp,
                                                        on_trial=on_trial)}


jobs = [job(name) for name in chosen]
job_keys = tuple(j["key"] for j in jobs)
cache = _ui.result_cache()
if st.button("Compress", type="primary", key="live_run", disabled=not chosen):
    outcome = _ui.run_jobs(jobs)
    st.session_state["live_results"] = (job_keys, {n: r for n, r in outcome.items() if isinstance(r, dict)})

done = st.session_state.get("live_results")
if done is None or done[0] != job_keys:
    _ui.original_preview(image_key, image.pixels, image.bit_depth, upload.name)
    st.info("Press **Compress** to code the image with the chosen codecs"
            + (f" at {target_bpp:g} bpp." if target == "bpp" else " at the chosen settings."))
    st.stop()

errors = done[1]
results = {}
for j in jobs:
    if j["name"] in errors:
        st.error(f"{j['name']} on {upload.name}: {live.user_message(errors[j['name']]['error'], upload.name)}")
        continue
    r = cache.get(j["key"])
    if r is None:  # evicted from the server's cache (memory budget): code again, with progress
        r = _ui.run_jobs([j]).get(j["name"])
        if isinstance(r, dict):
            st.error(f"{j['name']} on {upload.name}: {live.user_message(r['error'], upload.name)}")
            continue
    results[j["name"]] = r

if not results:
    st.stop()
st.subheader("Results")
st.dataframe([live.live_row(n, mode, r.evaluation, r.target_bpp) for n, r in results.items()], hide_index=True,
             key="live_table")
st.caption("bytes = complete encoded file; bpp = 8·bytes/(H·W); factor = raw bytes / coded bytes; PSNR with "
           "MAX = 2^bit_depth − 1; times in seconds (wall clock)."
           + (" Target bpp: each codec at the setting whose rate is closest to the target (core/rate_search.py); "
              "deviation = achieved / target − 1." if target == "bpp" else ""))
bpps = {n: r.evaluation.metrics["bpp"] for n, r in results.items()}
if target == "bpp":
    for n, r in results.items():
        st.caption(f"**{n}** @ {r.evaluation.metrics['setting']}: achieved "
                   f"{compare.deviation_text(r.evaluation.metrics['bpp'], target_bpp)}. {r.note}")
    warning = compare.unmatched_warning(bpps)
    if warning:
        st.warning(warning)
    elif len(bpps) > 1:
        st.success(f"All {len(bpps)} results within {100 * compare.MATCH_TOLERANCE:.0f} % of each other's rate.")
else:
    for n, r in results.items():
        if r.note:
            st.caption(f"**{n}**: {r.note}")
    if len(bpps) > 1 and compare.unmatched_pairs(bpps):
        st.caption("Settings chosen per codec: the rates differ (" + ", ".join(f"{n} {b:.3f}" for n, b in bpps.items())
                   + " bpp); choose *target bits per pixel* to compare at matched rate.")

window_note = _ui.display_note(image_key, image.pixels, image.bit_depth)
labels = {n: f"{n} @ {r.evaluation.metrics['setting']} ({r.evaluation.metrics['bpp']:.3f} bpp)"
          for n, r in results.items()}
_ui.comparison("live", image_key, image.pixels, image.bit_depth,
               {labels[n]: (j["key"], results[j["name"]].evaluation.reconstruction)
                for j in jobs for n in [j["name"]] if n in results}, window_note)

st.subheader("Downloads")
stem = upload.name.rsplit(".", 1)[0]
cols = st.columns(max(1, min(3, len(results))))
for i, (name, r) in enumerate(results.items()):
    col, ev = cols[i % len(cols)], r.evaluation
    col.download_button(f"Download {name} file ({len(ev.encoded):,} bytes)", ev.encoded,
                        file_name=f"{stem}_{name}_{ev.metrics['setting']}{live.encoded_suffix(name)}",
                        key=f"live_dl_enc_{name}", on_click="ignore")
    col.download_button(f"Download {name} reconstruction (PNG)", lambda rec=ev.reconstruction: imaging.png_bytes(rec),
                        file_name=f"{stem}_{name}_{ev.metrics['setting']}_reconstruction.png", mime="image/png",
                        key=f"live_dl_png_{name}", on_click="ignore",
                        help="Lossless PNG (16-bit stays 16-bit), made when you click")
