// rowshift run report: draws the run's facts, charts and tables from the JSON in
// #report-data, as HTML and inline SVG. Hand-written, no library, no network: the page
// must open offline. rowshift computed every number the charts show (time buckets,
// histogram bins, the slowest chunks), so this script only lays them out.
//
// Each box with a data-chart attribute is drawn by the function of that name in DRAW.
// A box that drew gets data-rendered="true"; one that threw gets "failed", and its
// error is shown in #errors (a test reads both).
"use strict";

(function () {
  const errorsBox = document.getElementById("errors");

  /** Shows an error in the page, so that a broken chart is seen, never hidden. */
  function showError(where, error) {
    errorsBox.hidden = false;
    const text = error && error.stack ? error.stack : String(error);
    errorsBox.textContent += where + ": " + text + "\n";
  }
  window.addEventListener("error", (e) => showError("script", e.error || e.message));

  let data;
  try {
    data = JSON.parse(document.getElementById("report-data").textContent);
  } catch (e) {
    showError("the embedded data", e);
    return;
  }

  // ---------------------------------------------------------------- formatting

  /** Text made safe to put into HTML or SVG markup. Every value of the data goes
   *  through this or a number formatter: a reason or an error can hold `<`. */
  function esc(value) {
    const map = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
    return String(value).replace(/[&<>"']/g, (c) => map[c]);
  }

  /** 1234567 → "1,234,567". */
  function grouped(n) {
    return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  /** An axis value, short: 1500 → "1.5k", 2000000 → "2M", 0.25 → "0.25". */
  function short(n) {
    const abs = Math.abs(n);
    const trim = (v) => String(+v.toPrecision(3));
    if (abs >= 1e9) return trim(n / 1e9) + "G";
    if (abs >= 1e6) return trim(n / 1e6) + "M";
    if (abs >= 1e4) return trim(n / 1e3) + "k";
    return String(+n.toPrecision(6));
  }

  /** Seconds as people read them: "12 ms", "3.40 s", "2 min 5 s", "1 h 20 min". */
  function duration(s) {
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  /** Epoch milliseconds as a UTC time. */
  function utc(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  /** A share (0 to 1) in percent. */
  function percent(x) {
    return (100 * x).toFixed(x < 0.1 ? 1 : 0) + " %";
  }

  /** A number for an SVG attribute: two decimals are finer than a pixel. */
  function f(v) {
    return Math.round(v * 100) / 100;
  }

  // Colors that stay apart for up to 13 series (12 drawn apart, and "other").
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b", "#7f7f7f",
  ];
  const color = (i) => PALETTE[i % PALETTE.length];

  // ---------------------------------------------------------------- building blocks

  /** A grey sentence under a chart. */
  function note(text) {
    return '<p class="note">' + esc(text) + "</p>";
  }

  /** A table: `columns` as [title, "num" for numbers or ""], rows of cells already
   *  escaped or formatted. */
  function table(className, columns, rows) {
    const head = columns
      .map(([title, kind]) => '<th class="' + kind + '">' + esc(title) + "</th>")
      .join("");
    const body = rows
      .map(
        (cells) =>
          '<tr class="' + className + '">' +
          cells.map((c, i) => '<td class="' + columns[i][1] + '">' + c + "</td>").join("") +
          "</tr>",
      )
      .join("");
    return "<table><thead><tr>" + head + "</tr></thead><tbody>" + body + "</tbody></table>";
  }

  /** A legend: a colored square and a label per series. */
  function legend(labels) {
    return (
      '<div class="legend">' +
      labels.map((l, i) => '<span style="--swatch:' + color(i) + '">' + esc(l) + "</span>").join("") +
      "</div>"
    );
  }

  /** A two-column list of facts: [name, value HTML]. */
  function facts(pairs) {
    return (
      '<dl class="facts">' +
      pairs.map(([k, v]) => "<dt>" + esc(k) + "</dt><dd>" + v + "</dd>").join("") +
      "</dl>"
    );
  }

  /** A horizontal bar of parts [share 0..1, color, title]. */
  function bar(parts) {
    return (
      '<div class="progress">' +
      parts
        .map(([share, c, title]) =>
          '<span style="width:' + f(100 * share) + "%;background:" + c + '" title="' + esc(title) + '"></span>')
        .join("") +
      "</div>"
    );
  }

  /** Round tick values from 0 to at least `max`, about `count` of them, in steps of 1, 2
   *  or 5 × a power of ten. */
  function ticks(max, count) {
    if (!(max > 0)) return [0, 1];
    const raw = max / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw * (1 - 1e-9));
    const n = Math.max(1, Math.ceil(max / step - 1e-9));
    const out = [];
    for (let i = 0; i <= n; i++) out.push(+(i * step).toPrecision(12));
    return out;
  }

  // The plot area inside each chart's SVG, in its own units (the SVG scales to the page).
  const W = 760;
  const H = 280;
  const M = { left: 68, right: 16, top: 12, bottom: 50 };

  /**
   * An empty plot: axes from 0 to xMax and 0 to yMax, with round ticks, grid lines and
   * a label with its unit on each. Returns the scales `x` and `y`, `marks` to push the
   * SVG of the data into, and `svg(title)`, the finished element.
   */
  function plot(o) {
    const xs = ticks(o.xMax, 8);
    const ys = ticks(o.yMax, 5);
    const xTop = xs[xs.length - 1];
    const yTop = ys[ys.length - 1];
    const iw = W - M.left - M.right;
    const ih = H - M.top - M.bottom;
    const x = (v) => M.left + (iw * v) / xTop;
    const y = (v) => M.top + ih * (1 - v / yTop);
    const marks = [];
    const grid = ys
      .map((v) => '<line x1="' + M.left + '" x2="' + (W - M.right) + '" y1="' + f(y(v)) + '" y2="' + f(y(v)) + '"/>')
      .join("");
    const yTicks = ys
      .map((v) => '<text x="' + (M.left - 6) + '" y="' + f(y(v) + 4) + '" text-anchor="end">' + esc(short(v)) + "</text>")
      .join("");
    const xTicks = xs
      .map(
        (v) =>
          '<line x1="' + f(x(v)) + '" x2="' + f(x(v)) + '" y1="' + (H - M.bottom) + '" y2="' + (H - M.bottom + 4) + '"/>' +
          '<text x="' + f(x(v)) + '" y="' + (H - M.bottom + 17) + '" text-anchor="middle">' + esc(short(v)) + "</text>",
      )
      .join("");
    const svg = (title) =>
      '<svg viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(title) + '">' +
      '<g class="grid">' + grid + "</g>" +
      marks.join("") +
      '<g class="axis">' +
      '<line x1="' + M.left + '" x2="' + M.left + '" y1="' + M.top + '" y2="' + (H - M.bottom) + '"/>' +
      '<line x1="' + M.left + '" x2="' + (W - M.right) + '" y1="' + (H - M.bottom) + '" y2="' + (H - M.bottom) + '"/>' +
      yTicks + xTicks + "</g>" +
      '<text class="label" x="' + (M.left + iw / 2) + '" y="' + (H - 8) + '" text-anchor="middle">' + esc(o.xLabel) + "</text>" +
      '<text class="label" transform="rotate(-90)" x="' + -(M.top + ih / 2) + '" y="14" text-anchor="middle">' + esc(o.yLabel) + "</text>" +
      "</svg>";
    return { x, y, marks, svg };
  }

  /** The unit a time axis of `spanSeconds` is labelled in, and seconds' factor to it. */
  function timeUnit(spanSeconds) {
    if (spanSeconds < 2) return { unit: "ms", factor: 1000 };
    if (spanSeconds < 120) return { unit: "s", factor: 1 };
    if (spanSeconds < 7200) return { unit: "min", factor: 1 / 60 };
    return { unit: "h", factor: 1 / 3600 };
  }

  /** A histogram: one bar per bin that holds values, `what(count, lo, hi)` its title. */
  function histogram(h, xLabel, yLabel, what) {
    const bins = h.counts.length;
    const p = plot({ xMax: bins * h.width, yMax: Math.max(...h.counts), xLabel, yLabel });
    h.counts.forEach((count, i) => {
      if (count === 0) return;
      const x0 = p.x(i * h.width);
      const x1 = p.x((i + 1) * h.width);
      p.marks.push(
        '<rect class="bar" fill="' + color(0) + '" x="' + f(x0 + 0.5) + '" width="' + f(Math.max(1, x1 - x0 - 1)) +
          '" y="' + f(p.y(count)) + '" height="' + f(p.y(0) - p.y(count)) + '">' +
          "<title>" + esc(what(count, i * h.width, (i + 1) * h.width)) + "</title></rect>",
      );
    });
    return p;
  }

  /** A chunk's row in a table: its id and range. */
  function chunkCell(c) {
    return esc(c.range);
  }

  // ---------------------------------------------------------------- the sections

  const DRAW = {};

  /** The run's facts: pipeline, source and target, plan time, chunks, rows, checksum. */
  DRAW.summary = function (box) {
    const c = data.chunks;
    const r = data.rows;
    const of = (n) => (c.total > 0 ? n / c.total : 0);
    const stateClass = "state-" + data.state.replace(/ /g, "-");
    box.insertAdjacentHTML(
      "beforeend",
      facts([
        ["pipeline", esc(data.pipeline)],
        ["state", '<span class="' + esc(stateClass) + '">' + esc(data.state) + "</span>"],
        ["source", '<span class="mono">' + esc(data.source) + "</span>"],
        ["target", '<span class="mono">' + esc(data.target) + "</span>"],
        ["planned", esc(data.planned_at)],
        [
          "chunks",
          grouped(c.done) + " done, " + grouped(c.failed) + " failed, " + grouped(c.pending) + " pending, " +
            grouped(c.running) + " running, of " + grouped(c.total) +
            bar([
              [of(c.done), "#1a7f37", "done"],
              [of(c.failed), "#b42318", "failed"],
              [of(c.running), "#0969da", "running"],
            ]),
        ],
        [
          "rows",
          grouped(r.read) + " read, " + grouped(r.written) + " written, " + grouped(r.filtered) + " filtered, " +
            grouped(r.rejected) + " rejected (over the done chunks)",
        ],
        ["checksum", '<span class="mono">' + esc(data.checksum) + "</span> over the done chunks"],
        ["checkpoint", '<span class="mono">' + esc(data.checkpoint) + "</span>"],
        ["rejected rows kept in", '<span class="mono">' + esc(data.quarantine) + "</span>"],
      ]),
    );
  };

  /** Rows read per second, stacked per worker, over the run's time. */
  DRAW.throughput = function (box) {
    const axis = data.axis;
    const series = data.throughput;
    if (!axis || series.length === 0) {
      box.innerHTML = note("No done chunk has its times recorded yet, so there is no throughput to draw.");
      return;
    }
    const n = axis.buckets;
    const bucketSeconds = axis.bucket_ms / 1000;
    const t = timeUnit(n * bucketSeconds);
    const totals = new Array(n).fill(0);
    series.forEach((s) => s.values.forEach((v, i) => (totals[i] += v)));
    const p = plot({
      xMax: n * bucketSeconds * t.factor,
      yMax: Math.max(...totals),
      xLabel: "time since the first chunk was claimed (" + t.unit + ")",
      yLabel: "rows read per second",
    });
    // Each worker is a band on the ones before it, flat across each bucket.
    const base = new Array(n).fill(0);
    series.forEach((s, k) => {
      const top = [];
      const bottom = [];
      for (let i = 0; i < n; i++) {
        const x0 = p.x(i * bucketSeconds * t.factor);
        const x1 = p.x((i + 1) * bucketSeconds * t.factor);
        const lo = base[i];
        const hi = lo + s.values[i];
        top.push([x0, p.y(hi)], [x1, p.y(hi)]);
        bottom.push([x0, p.y(lo)], [x1, p.y(lo)]);
        base[i] = hi;
      }
      const d = "M" + top.concat(bottom.reverse()).map(([a, b]) => f(a) + "," + f(b)).join("L") + "Z";
      const rows = s.values.reduce((a, v) => a + v, 0) * bucketSeconds;
      p.marks.push(
        '<path class="area" data-points="' + n + '" fill="' + color(k) + '" d="' + d + '">' +
          "<title>" + esc(s.name) + ": " + grouped(rows) + " rows</title></path>",
      );
    });
    const labels = series.map((s) => s.name + " (" + grouped(s.values.reduce((a, v) => a + v, 0) * bucketSeconds) + " rows)");
    box.innerHTML =
      p.svg("rows read per second per worker") +
      legend(labels) +
      note(
        "From " + utc(axis.start_ms) + ", in buckets of " + duration(bucketSeconds) +
          ". A chunk's rows count evenly over the time from its claim to its commit; chunks not yet done are not counted.",
      );
  };

  /** How long the done chunks took: a histogram. */
  DRAW.durations = function (box) {
    const h = data.durations;
    if (h.counts.length === 0) {
      box.innerHTML = note("No chunk is done yet.");
      return;
    }
    const p = histogram(h, "chunk duration (s)", "chunks", (count, lo, hi) =>
      count + (count === 1 ? " chunk" : " chunks") + " took " + short(lo) + " s to " + short(hi) + " s");
    box.innerHTML =
      p.svg("chunk durations") +
      note("Done chunks by the time their committed attempt took, read-back included, in bins of " + short(h.width) + " s.");
  };

  /** The slowest chunks, named with their range and worker. */
  DRAW.slowest = function (box) {
    if (data.slowest.length === 0) return;
    box.innerHTML =
      "<h3>Slowest chunks</h3>" +
      table(
        "slow",
        [["chunk", ""], ["worker", ""], ["duration", "num"], ["rows read", "num"], ["rows/s", "num"], ["read-back", "num"], ["attempts", "num"]],
        data.slowest.map((c) => [
          chunkCell(c),
          esc(c.worker || "this run"),
          duration(c.seconds),
          grouped(c.rows),
          c.seconds > 0 ? grouped(c.rows / c.seconds) : "",
          duration(c.verify_seconds),
          grouped(c.attempts),
        ]),
      );
  };

  /** Rejected rows per time bucket, stacked by reason. */
  DRAW.rejects = function (box) {
    const rj = data.rejects;
    if (rj.reasons.length === 0) {
      box.innerHTML = note("No row was rejected.");
      return;
    }
    const axis = data.axis;
    if (!axis || rj.over_time.length === 0) {
      box.innerHTML = note("The rejected rows' chunks have no times recorded; the table below counts them by reason.");
      return;
    }
    const n = axis.buckets;
    const bucketSeconds = axis.bucket_ms / 1000;
    const t = timeUnit(n * bucketSeconds);
    const totals = new Array(n).fill(0);
    rj.over_time.forEach((s) => s.values.forEach((v, i) => (totals[i] += v)));
    const p = plot({
      xMax: n * bucketSeconds * t.factor,
      yMax: Math.max(...totals),
      xLabel: "time since the first chunk was claimed (" + t.unit + ")",
      yLabel: "rows rejected per bucket",
    });
    const base = new Array(n).fill(0);
    rj.over_time.forEach((s, k) => {
      s.values.forEach((v, i) => {
        if (v <= 0) return;
        const x0 = p.x(i * bucketSeconds * t.factor);
        const x1 = p.x((i + 1) * bucketSeconds * t.factor);
        const y0 = p.y(base[i]);
        const y1 = p.y(base[i] + v);
        base[i] += v;
        p.marks.push(
          '<rect class="bar" fill="' + color(k) + '" x="' + f(x0 + 0.5) + '" width="' + f(Math.max(1, x1 - x0 - 1)) +
            '" y="' + f(y1) + '" height="' + f(y0 - y1) + '"><title>' + grouped(v) + " × " + esc(s.name) + "</title></rect>",
        );
      });
    });
    box.innerHTML =
      p.svg("rejected rows by reason over time") +
      legend(rj.over_time.map((s) => s.name)) +
      note(
        "A rejected row counts when its chunk was committed, in buckets of " + duration(bucketSeconds) + "." +
          (rj.untimed > 0 ? " " + grouped(rj.untimed) + " rows of chunks with no time recorded are left out." : ""),
      );
  };

  /** Every reason with its rows. */
  DRAW.reasons = function (box) {
    const reasons = data.rejects.reasons;
    if (reasons.length === 0) return;
    const all = reasons.reduce((a, r) => a + r.count, 0);
    box.innerHTML = table(
      "reason",
      [["reason", ""], ["rows", "num"], ["share", "num"]],
      reasons.map((r) => [esc(r.reason), grouped(r.count), percent(r.count / all)]),
    );
  };

  /** What reading the chunks back cost: in total, as a share, per chunk. */
  DRAW.readback = function (box) {
    const rb = data.readback;
    if (!rb.on) {
      box.innerHTML = note('Read-back is off (verify = "off"): chunks were not read back from the target.');
      return;
    }
    if (rb.per_chunk.counts.length === 0) {
      box.innerHTML = note("No chunk is done yet.");
      return;
    }
    const done = rb.per_chunk.counts.reduce((a, n) => a + n, 0);
    let html = facts([
      ["read-back in all", duration(rb.seconds) + " of " + duration(rb.chunk_seconds) + " of chunk time (worker time, summed over chunks)"],
      ["share of chunk time", percent(rb.share) + bar([[rb.share, "#e15759", "read-back"]])],
      ["per chunk", duration(rb.seconds / done) + " on average, " + duration(rb.max_seconds) + " at most"],
    ]);
    if (rb.seconds > 0) {
      const p = histogram(rb.per_chunk, "read-back time of a chunk (s)", "chunks", (count, lo, hi) =>
        count + (count === 1 ? " chunk" : " chunks") + " read back in " + short(lo) + " s to " + short(hi) + " s");
      html += p.svg("read-back seconds per chunk");
    } else {
      html += note("No read-back time is recorded for the done chunks.");
    }
    box.innerHTML = html;
  };

  /** Chunks claimed more than once, and failed ones, with their last errors. */
  DRAW.retries = function (box) {
    const rt = data.retries;
    if (rt.listed.length === 0) {
      box.innerHTML = note("No chunk was retried, and none failed.");
      return;
    }
    box.innerHTML =
      note(
        grouped(rt.retried) + (rt.retried === 1 ? " chunk" : " chunks") + " claimed more than once, " +
          grouped(rt.extra_attempts) + (rt.extra_attempts === 1 ? " attempt" : " attempts") + " beyond the first in all." +
          " The checkpoint keeps the last error of a failed chunk; a chunk's commit clears it.",
      ) +
      table(
        "retry",
        [["chunk", ""], ["state", ""], ["attempts", "num"], ["worker", ""], ["last error", "error"]],
        rt.listed.map((c) => [
          chunkCell(c),
          esc(c.state),
          grouped(c.attempts),
          esc(c.worker || ""),
          c.last_error ? esc(c.last_error) : '<span class="note">none kept</span>',
        ]),
      ) +
      (rt.more > 0 ? note("… and " + grouped(rt.more) + " more.") : "");
  };

  /** The workers that joined the run. */
  DRAW.workers = function (box) {
    const ws = data.workers;
    if (ws.length === 0) {
      box.innerHTML = note("One process ran this run; it recorded no workers.");
      return;
    }
    box.innerHTML = table(
      "worker",
      [["worker", ""], ["state", ""], ["joined", ""], ["last heartbeat", ""], ["chunks", "num"], ["rows read", "num"], ["rows written", "num"], ["rows/s", "num"]],
      ws.map((w) => {
        const seconds = (w.heartbeat_ms - w.started_ms) / 1000;
        return [
          esc(w.id),
          esc(w.state),
          utc(w.started_ms),
          utc(w.heartbeat_ms),
          grouped(w.chunks_done),
          grouped(w.rows_read),
          grouped(w.rows_written),
          seconds > 0 ? grouped(w.rows_read / seconds) : "",
        ];
      }),
    );
  };

  // ---------------------------------------------------------------- drawing

  document.getElementById("footer").textContent =
    "Written by " + data.generator + " from the checkpoint in " + data.checkpoint + ".";
  document.querySelectorAll("[data-chart]").forEach((box) => {
    const name = box.getAttribute("data-chart");
    try {
      DRAW[name](box);
      box.setAttribute("data-rendered", "true");
    } catch (e) {
      box.setAttribute("data-rendered", "failed");
      showError(name, e);
    }
  });
})();
