package dev.pocusedge.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** Latency statistics in the same definitions as pocus_edge/bench/stats.py (numpy's linear percentiles). */
public final class LatencyStats {
    public final double p50, p90, p99, mean, std, min, max, cv;
    public final int runs;

    public LatencyStats(double[] samplesMs) {
        if (samplesMs.length == 0) throw new IllegalArgumentException("no timing samples");
        double[] s = samplesMs.clone();
        Arrays.sort(s);
        runs = s.length;
        p50 = percentile(s, 50); p90 = percentile(s, 90); p99 = percentile(s, 99);
        double sum = 0;
        for (double v : s) sum += v;
        mean = sum / s.length;
        double var = 0;
        for (double v : s) var += (v - mean) * (v - mean);
        std = Math.sqrt(var / s.length);
        min = s[0]; max = s[s.length - 1];
        cv = mean > 0 ? std / mean : Double.NaN;
    }

    /** Linear interpolation between closest ranks on sorted data (numpy.percentile's default). */
    static double percentile(double[] sorted, double q) {
        double pos = (sorted.length - 1) * q / 100.0;
        int lo = (int) Math.floor(pos), hi = (int) Math.ceil(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    /** The latency_ms object of a `pocus bench` row. */
    public Map<String, Object> toJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("p50", p50); m.put("p90", p90); m.put("p99", p99); m.put("mean", mean); m.put("std", std);
        m.put("min", min); m.put("max", max);
        return m;
    }

    /** The device object of a row: the label tables show, and the model, SoC and Android version apart. */
    public static Map<String, Object> androidDevice(String manufacturer, String model, String soc, String release) {
        Map<String, Object> device = new LinkedHashMap<>();
        device.put("kind", "android");
        device.put("label", manufacturer + " " + model + " (" + soc + "), Android " + release);
        device.put("model", model);
        device.put("soc", soc);
        device.put("android", release);
        return device;
    }

    /** JSON has no NaN or infinity: a value that could not be computed is null (pocus_edge/bench/rows.py). */
    private static Double finiteOrNull(double v) {
        return Double.isFinite(v) ? v : null;
    }

    /**
     * A full result row in the `pocus-bench-row/1` schema (pocus_edge/bench/row.schema.json, which the JVM tests
     * validate it against), ready for `pocus bench import`.
     */
    public Map<String, Object> benchRow(Manifest manifest, String backend, int threads, Map<String, Object> device,
                                        double coldStartMs, int warmup, String date) {
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("schema", "pocus-bench-row/1");
        row.put("bundle", manifest.name);
        row.put("model", manifest.name);
        row.put("task", manifest.task);
        row.put("target", manifest.target);
        row.put("precision", manifest.precision);
        row.put("backend", backend);
        row.put("threads", threads);
        row.put("batch", 1);
        row.put("device", device);
        row.put("warmup", warmup);
        row.put("runs", runs);
        row.put("latency_ms", toJson());
        row.put("cv", finiteOrNull(cv));
        row.put("fps", finiteOrNull(1000.0 / p50));
        row.put("cold_start_ms", coldStartMs);
        row.put("source", "android_demo");
        row.put("date", date);
        return row;
    }
}
