package dev.pocusedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Same known samples and expected values as tests/test_bench.py; the app's row against the repository's schema. */
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

    @SuppressWarnings("unchecked")
    private static List<String> rowErrors(Map<String, Object> row) throws Exception {
        File schemaFile = new File(System.getProperty("row.schema.path"));
        SchemaValidator validator = new SchemaValidator((Map<String, Object>) Json.parse(Files.readString(schemaFile.toPath())));
        String written = Json.write(Map.of("schema", "pocus-bench-row/1", "rows", List.of(row)));  // as the app writes it
        assertFalse(written, written.contains("NaN") || written.contains("Infinity"));
        return validator.validate(Json.parse(written));
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> benchRow(double[] samples) throws Exception {
        File[] files = new File(System.getProperty("golden.dir")).listFiles((d, n) -> n.startsWith("seg_nhwc_int8"));
        Map<String, Object> c = (Map<String, Object>) Json.parse(Files.readString(files[0].toPath()));
        Manifest manifest = Manifest.parse(Json.write(c.get("manifest")), GoldenTest.schema());
        Map<String, Object> device = LatencyStats.androidDevice("samsung", "SM-S921B", "s5e9945", "14");
        return new LatencyStats(samples).benchRow(manifest, "litert xnnpack", 4, device, 310.5, 10,
                                                  "2026-11-20T10:11:12.123Z");
    }

    @Test
    public void benchRowFollowsTheRepositoryRowSchema() throws Exception {
        Map<String, Object> row = benchRow(new double[] {12.0, 10.5, 11.2, 13.9});
        List<String> errors = rowErrors(row);
        assertTrue(errors.toString(), errors.isEmpty());
        row.put("threads", "4");
        row.remove("date");
        row.put("gpu", "Mali");
        String found = rowErrors(row).toString();
        assertTrue(found, found.contains("/rows/0/threads") && found.contains("date") && found.contains("gpu"));
    }

    @Test
    public void undefinedStatisticsAreNullNotNaN() throws Exception {
        Map<String, Object> row = benchRow(new double[] {0.0, 0.0});  // mean 0: no CV; p50 0: no FPS
        assertNull(row.get("cv"));
        assertNull(row.get("fps"));
        List<String> errors = rowErrors(row);
        assertTrue(errors.toString(), errors.isEmpty());
    }
}
