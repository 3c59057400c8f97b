import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { SeriesCounter, SeriesHistogram } from "../../app/observability/series.js";

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVED: Array<[Record<"device" | "result", string>, number]> = [
  [{ device: "tv", result: "ok" }, 0.0005],
  [{ device: "tv", result: "ok" }, 0.001], // on a bound: counted in that bucket, as Prometheus says (le)
  [{ device: "tv", result: "ok" }, 0.5],
  [{ device: "tv", result: "error" }, 7],
  [{ device: 'quote"d\\name', result: "ok" }, 0.02],
];

describe("SeriesCounter and SeriesHistogram expose exactly what prom-client's own would", () => {
  it("a histogram: same buckets, +Inf, _sum and _count lines, label escaping", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const h = new SeriesHistogram("x_seconds", "Help text.", ["device", "result"], BUCKETS, ours);
    const p = new Histogram({
      name: "x_seconds",
      help: "Help text.",
      labelNames: ["device", "result"],
      buckets: BUCKETS,
      registers: [theirs],
    });
    for (const [labels, v] of OBSERVED) {
      h.observe(labels, v);
      p.observe(labels, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).toContain('x_seconds_bucket{le="0.001",device="tv",result="ok"} 2');
  });

  it("a counter: series by label values, increments summed, reset empties it", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const c = new SeriesCounter("y_total", "Help.", ["direction"], ours);
    const p = new Counter({ name: "y_total", help: "Help.", labelNames: ["direction"], registers: [theirs] });
    for (const direction of ["in", "out", "in", "in"]) {
      c.inc({ direction });
      p.inc({ direction });
    }
    c.inc({ direction: "out" }, 5);
    p.inc({ direction: "out" }, 5);
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).toContain('y_total{direction="in"} 3');
    ours.resetMetrics();
    expect(await ours.metrics()).not.toContain("y_total{");
  });

  it("a label object changed by its caller after the call does not change the series", async () => {
    const registry = new Registry();
    const c = new SeriesCounter("z_total", "Help.", ["device"], registry);
    const labels = { device: "a" };
    c.inc(labels);
    labels.device = "b";
    expect(await registry.metrics()).toContain('z_total{device="a"} 1');
    expect(await registry.metrics()).not.toContain('device="b"');
  });
});
