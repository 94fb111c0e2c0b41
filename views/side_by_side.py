"""Side by side: a stored image coded by two codecs at matched bpp (or chosen settings), re-encoded now and
compared pixel for pixel with the original (split view, 1:1 panels, difference maps), with metrics."""
import pandas as pd
import streamlit as st

from core.dashboard import compare, data, live
from core.setting_text import parse_setting
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

start = data.default_selection(ok)


def pick(where, label: str, options: list, preferred, key: str, **kwargs):
    """A selectbox opening on ``preferred`` when it is among the options."""
    index = options.index(preferred) if preferred in options else 0
    return where.selectbox(label, options, index=index, key=key, **kwargs)


c = st.columns(4)
stages = sorted(int(s) for s in ok["stage"].unique())
stage = pick(c[0], "Stage", stages, start["stage"], "sbs_stage")
sel = ok[ok["stage"] == stage]
datasets = [d for s, d in data.catalog_order() if s == stage and d in set(sel["dataset"])]
datasets += sorted(set(sel["dataset"]) - set(datasets))
dataset = pick(c[1], "Dataset", datasets, start["dataset"], "sbs_dataset")
sel = sel[sel["dataset"] == dataset]
image_id = c[2].selectbox("Image", sorted(sel["image_id"].unique()), key="sbs_image")
sel = sel[sel["image_id"] == image_id]
mode = c[3].selectbox("Colour mode", sorted(sel["colour_mode"].unique()), key="sbs_mode",
                      help="joint: the codec sees all channels; per_channel: each RGB channel coded as gray")
sel = sel[sel["colour_mode"] == mode]
lossy = sel[sel["setting"].astype(str) != "-"]
codecs = sorted(lossy["codec"].unique()) or sorted(sel["codec"].unique())
preferred = live.default_codecs(codecs)
c = st.columns(4)
codec_a = pick(c[0], "Codec A", codecs, preferred[0], "sbs_codec_a", help=_ui.knob(preferred[0]))
others = [n for n in codecs if n != codec_a] or [codec_a]
codec_b = pick(c[1], "Codec B", others, next((n for n in preferred if n != codec_a), others[0]), "sbs_codec_b")
match = c[2].radio("Compare at", ["bpp", "setting"], key="sbs_match", horizontal=True,
                   format_func={"bpp": "matched bpp", "setting": "chosen settings"}.get)
rows_a = sel[sel["codec"] == codec_a].sort_values("bpp")
rows_b = sel[sel["codec"] == codec_b].sort_values("bpp")

target = None
if match == "bpp":
    opening = data.best_matched_target(rows_a["bpp"], rows_b["bpp"])
    target = float(c[3].number_input("Target bpp", min_value=0.001, max_value=48.0, value=round(opening, 3),
                                     step=0.05, format="%.3f",
                                     key=f"sbs_bpp_{stage}_{dataset}_{image_id}_{mode}_{codec_a}_{codec_b}",
                                     help="Each codec at its stored setting whose rate is closest to the target "
                                          "(opens where the two stored sweeps come closest)"))
    chosen = {codec_a: data.closest_stored(rows_a, target), codec_b: data.closest_stored(rows_b, target)}
else:
    chosen = {}
    for col, name, rows in ((c[3], codec_a, rows_a), (c[3], codec_b, rows_b)):
        settings = list(rows["setting"])
        s = col.selectbox(f"{name} setting", settings, index=len(settings) // 2, key=f"sbs_setting_{name}",
                          help=_ui.knob(name))
        chosen[name] = rows[rows["setting"] == s].iloc[0]
names = list(dict.fromkeys([codec_a, codec_b]))

# the original and the re-encodings: cached per stored row, coded with progress
cache = _ui.result_cache()
image_key = ("stored", int(stage), dataset, image_id)
try:
    ref = data.find_ref(int(stage), dataset, image_id, _ui.data_root())

    def load():
        from core.datasets import load_ref

        return load_ref(ref)

    with st.spinner(f"Loading {dataset}/{image_id}…"):
        image = cache.get_or_make(image_key, load)
except LookupError as exc:
    st.error(f"Cannot reload the original: {exc}. Start the dashboard with `-- --data-root DIR` or set "
             "BIOCODEC_DATA_ROOT.")
    st.stop()
except Exception as exc:
    st.error(f"Cannot load {dataset}/{image_id}: {type(exc).__name__}: {exc}")
    st.stop()

searched = st.session_state.get("sbs_searched", {})
search_key = (image_key, mode, tuple(names), target)
use_search = match == "bpp" and searched.get(search_key, False)


def job(name: str) -> dict:
    codec = _ui.codec(name)
    if use_search:
        return {"name": name, "key": image_key + (mode, name, "bpp", round(target, 6)),
                "expected": live.expected_trials(codec, target),
                "make": lambda on_trial: live.live_compress(image, codec, mode, None, target, on_trial=on_trial)}
    setting = str(chosen[name]["setting"])
    return {"name": name, "key": image_key + (mode, name, "setting", setting), "expected": 1,
            "make": lambda on_trial: live.live_compress(image, codec, mode, parse_setting(setting),
                                                        on_trial=on_trial)}


if match == "bpp" and not use_search:
    if st.button("Search each codec's setting for this target on this image now (bisection, slower)",
                 key="sbs_search"):
        st.session_state["sbs_searched"] = {**searched, search_key: True}
        st.rerun()
jobs = [job(n) for n in names]
outcome = _ui.run_jobs(jobs)
failed = {n: r["error"] for n, r in outcome.items() if isinstance(r, dict)}
for n, message in failed.items():
    st.error(f"Re-encoding {dataset}/{image_id} with {n} failed: {message}")
results = {n: r for n, r in outcome.items() if not isinstance(r, dict)}
if not results:
    st.stop()

# metrics, rounded, with units; the stored row's bytes beside the re-encoded ones
table = []
for name, r in results.items():
    row = live.live_row(name, mode, r.evaluation, target)
    stored = chosen[name]
    if not use_search:
        row["stored bytes"] = int(stored["bytes"])
        row["same bytes as stored"] = int(stored["bytes"]) == r.evaluation.metrics["bytes"]
    table.append(row)
st.dataframe(pd.DataFrame(table), hide_index=True, key="sbs_table")
m0 = next(iter(results.values())).evaluation
shape = image.pixels.shape
st.caption(f"{dataset}/{image_id}: {shape[1]}×{shape[0]} px, {image.bit_depth}-bit, "
           f"{1 if image.pixels.ndim == 2 else 3} channel(s). Re-encoded now "
           + ("with the setting found by the search on this image (core/rate_search.py)."
              if use_search else "at the stored settings; *same bytes as stored* checks the re-encoding against "
                                 "the database row.")
           + " bpp = 8·bytes/(H·W); PSNR with MAX = 2^bit_depth − 1.")
bpps = {n: r.evaluation.metrics["bpp"] for n, r in results.items()}
if match == "bpp":
    st.caption(" · ".join(f"**{n}** @ {r.evaluation.metrics['setting']}: "
                          f"{compare.deviation_text(r.evaluation.metrics['bpp'], target)}" for n, r in results.items())
               + ("" if use_search else " — the stored setting closest to the target."))
    warning = compare.unmatched_warning(bpps)
    if warning:
        st.warning(warning + ("" if use_search else " The stored sweep has no closer pair: use the search button "
                                                    "above to find each codec's setting for the target on this "
                                                    "image."))
    else:
        st.success(f"Rates within {100 * compare.MATCH_TOLERANCE:.0f} % of each other: compared at matched bpp.")

labels = {n: f"{n} @ {r.evaluation.metrics['setting']} ({r.evaluation.metrics['bpp']:.3f} bpp)"
          for n, r in results.items()}
_ui.comparison("sbs", image_key, image.pixels, image.bit_depth,
               {labels[j["name"]]: (j["key"], results[j["name"]].evaluation.reconstruction)
                for j in jobs if j["name"] in results},
               _ui.display_note(image_key, image.pixels, image.bit_depth))

st.subheader("Segmentation")
if st.checkbox("Segment the original and the reconstructions (may take several seconds)", key="sbs_segment"):
    segs = {}
    with st.spinner("Segmenting…"):
        for name, r in results.items():
            try:
                segs[name] = _ui.segment_pair(ref, image.pixels, image.bit_depth, r.evaluation.reconstruction)
            except Exception as exc:
                segs[name] = {"notice": f"Segmentation failed: {type(exc).__name__}: {exc}"}
    notices = {n: s["notice"] for n, s in segs.items() if "notice" in s}
    for n, text in notices.items():
        st.info(f"{n}: {text}")
    rows = [live.segmentation_row(n, s["metrics"]) for n, s in segs.items() if "metrics" in s]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="sbs_seg_table")
        st.caption("Segmentation of each reconstruction compared with the segmentation of the original "
                   "(1 = identical); rounded to 3 decimals.")
        firsts = [(n, s) for n, s in segs.items() if "original" in s]
        if firsts:
            from core.dashboard import imaging

            view_o = cache.get(image_key + ("view8",))
            cols = st.columns(1 + len(firsts))
            try:
                cols[0].image(imaging.overlay_segmentation(view_o, firsts[0][1]["original"]), output_format="PNG",
                              caption="original: segmentation in red")
                for col, (n, s) in zip(cols[1:], firsts):
                    view_r = cache.get(next(j["key"] for j in jobs if j["name"] == n) + ("view8",))
                    col.image(imaging.overlay_segmentation(view_r, s["reconstruction"]), output_format="PNG",
                              caption=f"{n}: segmentation in red")
                st.caption("Overlays are scaled to the column width (the comparison above is pixel-exact).")
            except ValueError as exc:
                st.caption(f"No overlay: {exc}")
