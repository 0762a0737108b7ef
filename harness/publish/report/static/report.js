// Sorting, filtering and per-case details for the vlm-parity report.
// Each case is one <tbody class="case"> holding its main row and its detail row,
// so sorting and filtering move and hide both together.
(function () {
  "use strict";
  const table = document.getElementById("cases");
  const bodies = () => Array.from(table.querySelectorAll("tbody.case"));

  // Filters: verdict, tag, free text over case id and tags.
  const verdict = document.getElementById("filter-verdict");
  const tag = document.getElementById("filter-tag");
  const text = document.getElementById("filter-text");
  const shown = document.getElementById("shown-count");
  function applyFilters() {
    let n = 0;
    for (const body of bodies()) {
      const tags = body.dataset.tags.split(",");
      const ok = (!verdict.value || body.dataset.verdict === verdict.value) &&
                 (!tag.value || tags.includes(tag.value)) &&
                 (!text.value || (body.dataset.case + " " + body.dataset.tags).includes(text.value));
      body.hidden = !ok;
      if (ok) n++;
    }
    shown.textContent = String(n);
  }
  [verdict, tag].forEach((el) => el.addEventListener("change", applyFilters));
  text.addEventListener("input", applyFilters);

  // Sorting: numeric where the cell has data-value, text otherwise; missing values last.
  table.querySelectorAll("th.sortable").forEach((th) => {
    let ascending = true;
    th.addEventListener("click", () => {
      const index = Number(th.dataset.col);
      const key = (body) => {
        const cell = body.querySelector("tr.main").children[index];
        return cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
      };
      const sorted = bodies().sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const nx = Number(x), ny = Number(y);
        const c = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
        return ascending ? c : -c;
      });
      sorted.forEach((body) => table.appendChild(body));
      ascending = !ascending;
    });
  });

  // Details: toggled by clicking the main row; the chart is drawn on first open.
  function drawChart(el) {
    // Each detailed case carries its charts' data beside it, parsed the first time one is drawn.
    const box = el.closest(".detail-box");
    const script = box && box.querySelector("script.chart-data");
    if (script && !box.chartData) box.chartData = JSON.parse(script.textContent);
    const d = box && box.chartData ? box.chartData.charts[el.dataset.chart] : null;
    const floorDiffs = d ? box.chartData.floor : [];
    if (!d || el.dataset.drawn) return;
    el.dataset.drawn = "1";
    const floor = 1e-9;
    const shapes = d.spans.map(([a, b]) => ({
      type: "rect", xref: "x", yref: "paper", x0: a - 0.5, x1: b - 0.5, y0: 0, y1: 1,
      fillcolor: "rgba(9,105,218,0.12)", line: { width: 0 },
    }));
    if (d.threshold) {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: d.threshold, y1: d.threshold,
                    line: { color: "#cf222e", dash: "dash", width: 1 } });
    }
    const traces = [{
      x: d.diffs.map((_, i) => i), y: d.diffs.map((v) => (v === null ? null : Math.max(v, floor))),
      type: "scatter", mode: "lines+markers", marker: { size: 4 }, line: { width: 1 },
      name: "|engine - reference|", hovertemplate: "position %{x}<br>diff %{y:.3g}<extra></extra>",
    }];
    if (floorDiffs.length) {
      traces.push({
        x: floorDiffs.map((_, i) => i), y: floorDiffs.map((v) => (v === null ? null : Math.max(v, floor))),
        type: "scatter", mode: "lines", line: { width: 1, color: "#8c959f" }, fill: "tozeroy",
        fillcolor: "rgba(140,149,159,0.18)", name: "floor: the reference against itself",
        hovertemplate: "position %{x}<br>floor %{y:.3g}<extra></extra>",
      });
    }
    Plotly.newPlot(el, traces, {
      margin: { l: 60, r: 10, t: 24, b: 40 }, shapes: shapes, legend: { orientation: "h", y: -0.25 },
      title: { text: "prefill logprob diff per prompt position (shaded blue: image placeholders; grey: floor; dashed: failure bound)",
               font: { size: 12 } },
      xaxis: { title: { text: "prompt position" } },
      yaxis: { type: "log", title: { text: "|diff| (0 drawn at 1e-9)" }, exponentformat: "e" },
    }, { displaylogo: false, responsive: true });
  }
  // A click on a variant's grid cell opens the case and scrolls to that variant's section.
  for (const body of bodies()) {
    const main = body.querySelector("tr.main");
    const detail = body.querySelector("tr.detail");
    main.addEventListener("click", (event) => {
      const cell = event.target.closest("td.cell");
      if (cell && !detail.hidden) {
        scrollToVariant(body, cell.dataset.variant);
        return;
      }
      detail.hidden = !detail.hidden;
      if (!detail.hidden) {
        detail.querySelectorAll(".chart").forEach(drawChart);
        if (cell) scrollToVariant(body, cell.dataset.variant);
      }
    });
  }
  // The "needs attention" list: a link opens that case's detail at that variant.
  document.querySelectorAll("a.open-case").forEach((link) => {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const body = bodies().find((b) => b.dataset.case === link.dataset.case);
      if (!body) return;
      body.hidden = false;
      const detail = body.querySelector("tr.detail");
      detail.hidden = false;
      detail.querySelectorAll(".chart").forEach(drawChart);
      if (link.dataset.variant) scrollToVariant(body, link.dataset.variant);
      else body.scrollIntoView({ block: "start" });
    });
  });
  function scrollToVariant(body, variant) {
    const section = document.getElementById("detail-" + body.dataset.case + "--" + variant);
    if (section) section.scrollIntoView({ block: "start" });
  }

  // Trend charts (nightly history), when the report has them.
  const trends = document.getElementById("trend-data");
  if (trends) {
    const t = JSON.parse(trends.textContent);
    for (const [metric, values] of Object.entries(t.metrics)) {
      Plotly.newPlot("trend-" + metric, [{ x: t.labels, y: values, type: "scatter", mode: "lines+markers" }], {
        margin: { l: 60, r: 10, t: 28, b: 60 }, title: { text: metric, font: { size: 12 } },
        yaxis: { type: metric === "throughput_tok_s" || metric === "rouge_l_min" ? "linear" : "log",
                 exponentformat: "e" },
      }, { displaylogo: false, responsive: true });
    }
  }
  applyFilters();
})();
