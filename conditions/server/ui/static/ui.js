// conditionsdb web pages: the IoV timeline's run picker. Everything else is plain HTML.
"use strict";

(function () {
  const chart = document.getElementById("timeline");
  if (!chart) return;
  const lo = Number(chart.dataset.runLo), hi = Number(chart.dataset.runHi);
  const left = Number(chart.dataset.plotLeft), plotWidth = Number(chart.dataset.plotWidth);
  const span = hi - lo + 1;
  const cursor = document.getElementById("timeline-cursor");
  const readout = document.getElementById("timeline-readout");
  let current = chart.dataset.cursor === "" ? null : Number(chart.dataset.cursor);

  // The run under a point of the drawing (its x in SVG units), or null outside the plot.
  function runAt(x) {
    if (x < left || x > left + plotWidth) return null;
    return Math.min(hi, lo + Math.floor(((x - left) / plotWidth) * span));
  }
  function svgX(event) {
    const point = chart.createSVGPoint();
    point.x = event.clientX; point.y = event.clientY;
    return point.matrixTransform(chart.getScreenCTM().inverse()).x;
  }
  function show(run) {
    const x = left + ((run - lo + 0.5) / span) * plotWidth;
    cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
    cursor.setAttribute("visibility", "visible");
    readout.textContent = "run " + run + " (Enter shows what a job gets there)";
  }
  function go(run) {
    const href = chart.dataset.href;
    window.location.assign(href + (href.indexOf("?") >= 0 ? "&" : "?") + "run=" + run + "#at");
  }

  chart.addEventListener("mousemove", function (event) {
    const run = runAt(svgX(event));
    if (run !== null) readout.textContent = "run " + run + " (click to see what a job gets there)";
  });
  chart.addEventListener("click", function (event) {
    if (event.target.closest("a")) return; // a payload name link
    const run = runAt(svgX(event));
    if (run !== null) go(run);
  });
  chart.addEventListener("keydown", function (event) {
    const big = Math.max(1, Math.round(span / 20));
    let run = current === null ? lo : current;
    if (event.key === "ArrowRight") run = Math.min(hi, run + (event.shiftKey ? big : 1));
    else if (event.key === "ArrowLeft") run = Math.max(lo, run - (event.shiftKey ? big : 1));
    else if (event.key === "Home") run = lo;
    else if (event.key === "End") run = hi;
    else if (event.key === "Enter" && current !== null) { go(current); return; }
    else return;
    event.preventDefault();
    current = run;
    show(run);
  });
})();
