package dev.pocusedge.core;

import static org.junit.Assert.assertEquals;

import java.util.Map;
import org.junit.Test;

/** Same known samples and expected values as tests/test_bench.py. */
public class LatencyStatsTest {
    @Test
    public void percentilesMatchNumpy() {
        double[] samples = new double[100];
        for (int k = 0; k < 100; k++) samples[k] = 100 - k;  // 100..1 ms, unsorted on purpose
        LatencyStats s = new LatencyStats(samples);
        assertEquals(50.5, s.p50, 1e-9);
        assertEquals(90.1, s.p90, 1e-9);
        assertEquals(99.01, s.p99, 1e-9);
        assertEquals(50.5, s.mean, 1e-9);
        assertEquals(28.866070047722118, s.std, 1e-9);
        Map<String, Object> lat = s.toJson();
        assertEquals(50.5, (Double) lat.get("p50"), 1e-9);
    }
}
