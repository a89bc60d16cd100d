"""Charts as SVG geometry computed on the server: the page needs no script, no charting library
and nothing from a CDN. Overview and Reports draw with these."""

# Rows of a ranking chart at most (the table below it has them all).
RANKED_ROWS = 12


def daily_chart(days: list[dict], width: int = 760, height: int = 220) -> dict:
    """Clicks per day as bars (left scale) and conversions as a line (right scale); `days`
    holds every day of the range ({"day", "clicks", "conversions"}), zeros included."""
    left, right, top, bottom = 44, 44, 12, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    max_clicks = max([d["clicks"] for d in days] + [1])
    max_conv = max([d["conversions"] for d in days] + [1])
    step = plot_w / max(len(days), 1)
    every = max(1, round(len(days) / 6))
    bars, points, labels = [], [], []
    for i, day in enumerate(days):
        bar_h = plot_h * day["clicks"] / max_clicks
        x = left + i * step
        bars.append(
            {
                "x": round(x + step * 0.15, 1),
                "y": round(top + plot_h - bar_h, 1),
                "w": round(step * 0.7, 1),
                "h": round(bar_h, 1),
                "title": f"{day['day']:%b %d}: {day['clicks']} clicks, "
                f"{day['conversions']} conversions",
            }
        )
        cx = x + step / 2
        cy = top + plot_h - plot_h * day["conversions"] / max_conv
        points.append((round(cx, 1), round(cy, 1)))
        if i % every == 0 or i == len(days) - 1:
            labels.append({"x": round(cx, 1), "text": f"{day['day']:%b %d}"})
    return {
        "width": width,
        "height": height,
        "plot": {"left": left, "top": top, "right": width - right, "bottom": top + plot_h},
        "bars": bars,
        "line": " ".join(f"{x},{y}" for x, y in points),
        "dots": [{"x": x, "y": y} for x, y in points],
        "labels": labels,
        "label_y": height - 8,
        "max_clicks": max_clicks,
        "max_conversions": max_conv,
    }


def ranking_chart(rows: list, width: int = 760, row_height: int = 26) -> dict:
    """The report's groups with most clicks as horizontal bars: clicks and, beside them,
    approved conversions, each on its own scale (the numbers are written at the bars' ends)."""
    ranked = sorted(rows, key=lambda r: (-r.clicks, -r.conversions, str(r.label)))[:RANKED_ROWS]
    label_w, gap = 170, 8
    plot_w = width - label_w - 90
    max_clicks = max([r.clicks for r in ranked] + [1])
    max_conv = max([r.conversions for r in ranked] + [1])
    bars = []
    for i, row in enumerate(ranked):
        y = i * row_height + 4
        label = str(row.label)
        clicks_w = round(plot_w * row.clicks / max_clicks, 1)
        conv_w = round(plot_w * row.conversions / max_conv, 1)
        bars.append(
            {
                "label": label if len(label) <= 24 else label[:23] + "…",
                "full_label": label,
                "label_y": y + 12,
                "clicks_y": y,
                "clicks_w": clicks_w,
                "clicks": row.clicks,
                "conv_y": y + 11,
                "conv_w": conv_w,
                "conversions": row.conversions,
                "clicks_text_x": label_w + clicks_w + gap,
                "conv_text_x": label_w + conv_w + gap,
            }
        )
    return {
        "width": width,
        "height": max(len(ranked), 1) * row_height + 8,
        "label_x": label_w - gap,
        "plot_x": label_w,
        "bars": bars,
        "shown": len(ranked),
        "of": len(rows),
    }
