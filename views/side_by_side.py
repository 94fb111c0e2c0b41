"""Side by side: an original and its reconstruction, losslessly displayed, with zoom, difference and metrics."""
import streamlit as st

from core.dashboard import data, imaging
from core.metrics import ms_ssim_db
from views import _ui

st.title("Side by side")
snap = _ui.snapshot()
include_training = _ui.include_training_checkbox("sbs_training", st.sidebar)
selected = data.select_rows(snap.results, include_training)
ok = selected[selected["error"].isna()]
st.caption(data.rows_note(len(ok), include_training,
                          int(snap.results["error"].isna().sum()) - len(ok)) + " to choose from")
if ok.empty:
    st.info("No successful rows to show.")
    st.stop()

c = st.columns(6)
stage = c[0].selectbox("Stage", sorted(ok["stage"].unique()), key="sbs_stage")
sel = ok[ok["stage"] == stage]
dataset = c[1].selectbox("Dataset", sorted(sel["dataset"].unique()), key="sbs_dataset")
sel = sel[sel["dataset"] == dataset]
image_id = c[2].selectbox("Image", sorted(sel["image_id"].unique()), key="sbs_image")
sel = sel[sel["image_id"] == image_id]
codec_name = c[3].selectbox("Codec", sorted(sel["codec"].unique()), key="sbs_codec")
sel = sel[sel["codec"] == codec_name]
mode = c[4].selectbox("Colour mode", sorted(sel["colour_mode"].unique()), key="sbs_mode")
sel = sel[sel["colour_mode"] == mode].sort_values("bpp")
settings = list(sel["setting"])
setting = c[5].selectbox("Setting", settings, index=len(settings) // 2, key="sbs_setting",
                         help=_ui.knob(codec_name))
stored = sel[sel["setting"] == setting].iloc[0]

try:
    with st.spinner(f"Loading {image_id} and re-encoding with {codec_name} at {setting}…"):
        pair = _ui.reencode_stored(int(stage), dataset, image_id, codec_name, mode, setting, _ui.data_root())
except LookupError as exc:
    st.error(f"Cannot reload the original: {exc}. Start the dashboard with `-- --data-root DIR` or set "
             "BIOCODEC_DATA_ROOT.")
    st.stop()
except Exception as exc:
    st.error(f"Re-encoding failed: {type(exc).__name__}: {exc}")
    st.stop()

original, recon, depth = pair["original"], pair["reconstruction"], pair["bit_depth"]
m = pair["metrics"]
cols = st.columns(6)
cols[0].metric("bytes", f"{m['bytes']:,}")
cols[1].metric("bpp", f"{m['bpp']:.4f}")
cols[2].metric("factor", f"{m['factor']:.2f}×")
cols[3].metric("PSNR dB", f"{m['psnr']:.2f}")
cols[4].metric("SSIM", f"{m['ssim']:.4f}")
cols[5].metric("MS-SSIM dB", f"{ms_ssim_db(m['ms_ssim']):.2f}")
st.caption(f"Re-encoded now; stored row: {int(stored['bytes']):,} bytes, {stored['bpp']:.4f} bpp, PSNR "
           f"{stored['psnr']:.2f} dB, SSIM {stored['ssim']:.4f}. {original.shape[1]}×{original.shape[0]} px, "
           f"{depth}-bit, {1 if original.ndim == 2 else 3} channel(s).")

view_o, note = imaging.window_to_8bit(original, depth)
view_r, _ = imaging.window_to_8bit(recon, depth, reference=original)
left, right = st.columns(2)
left.image(view_o, caption="original", output_format="PNG")
right.image(view_r, caption=f"{codec_name} {setting} ({mode})", output_format="PNG")
st.caption(f"Displayed losslessly as PNG. {note}")

st.subheader("Zoomed crop (same window on both)")
z = st.columns(3)
size = z[0].select_slider("Crop size (px)", [16, 32, 64, 128, 256], value=64, key="sbs_size")
cy = z[1].slider("Vertical position (%)", 0, 100, 50, key="sbs_cy")
cx = z[2].slider("Horizontal position (%)", 0, 100, 50, key="sbs_cx")
window = imaging.crop_window(original.shape, cy / 100, cx / 100, size)
diff = imaging.abs_difference(original, recon)
heat, vmax = imaging.heat_map(diff)
zc = st.columns(3)
zc[0].image(imaging.zoom(view_o, window), caption="original (crop)", output_format="PNG")
zc[1].image(imaging.zoom(view_r, window), caption="reconstruction (crop)", output_format="PNG")
zc[2].image(imaging.zoom(heat, window), caption="|difference| (crop)", output_format="PNG")
y0, x0, y1, x1 = window
st.caption(f"Window rows {y0}–{y1 - 1}, columns {x0}–{x1 - 1}; enlarged by pixel repetition (no interpolation).")

st.subheader("Absolute difference")
st.image(heat, caption=f"|original − reconstruction| (max over channels): black = 0, bright yellow = {vmax:.0f} "
                       f"intensity units (the maximum); mean {diff.mean():.2f}.", output_format="PNG")

st.subheader("Segmentation")
if st.checkbox("Segment original and reconstruction (may take several seconds)", key="sbs_segment"):
    with st.spinner("Segmenting…"):
        try:
            seg = _ui.segment_pair(pair["ref"], original, depth, recon)
        except Exception as exc:
            seg = {"notice": f"Segmentation failed: {type(exc).__name__}: {exc}"}
    if "notice" in seg:
        st.info(seg["notice"])
    else:
        st.json({k: (None if v is None else float(v)) for k, v in seg["metrics"].items()})
        if "original" in seg:
            s1, s2 = st.columns(2)
            try:
                s1.image(imaging.overlay_segmentation(view_o, seg["original"]), output_format="PNG",
                         caption="segmentation of the original (red: object boundaries / contours)")
                s2.image(imaging.overlay_segmentation(view_r, seg["reconstruction"]), output_format="PNG",
                         caption="segmentation of the reconstruction")
            except ValueError as exc:
                st.caption(f"No overlay: {exc}")
        else:
            st.caption("This evaluator reports metrics only (no label images to overlay).")
