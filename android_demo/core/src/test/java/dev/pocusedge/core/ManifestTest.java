package dev.pocusedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.file.Files;
import java.util.Map;
import org.junit.Test;

/** Manifest parsing and validation against the repository's JSON Schema. */
public class ManifestTest {
    @SuppressWarnings("unchecked")
    private static Map<String, Object> firstGoldenManifest() throws Exception {
        File[] files = new File(System.getProperty("golden.dir")).listFiles((d, n) -> n.startsWith("seg_nhwc_int8"));
        Map<String, Object> c = (Map<String, Object>) Json.parse(Files.readString(files[0].toPath()));
        return (Map<String, Object>) c.get("manifest");
    }

    @Test
    public void validManifestParsesWithTypedFields() throws Exception {
        Manifest m = Manifest.parse(Json.write(firstGoldenManifest()), GoldenTest.schema());
        assertEquals("segmentation", m.task);
        assertEquals(48, m.height);
        assertEquals(64, m.width);
        assertEquals("NHWC", m.inputLayout);
        assertEquals(-10, m.inputZeroPoint);
        assertTrue(m.integerInput());
        assertEquals(2, m.labels.size());
    }

    @Test
    public void invalidManifestsAreRefusedWithTheField() throws Exception {
        Map<String, Object> bad = firstGoldenManifest();
        bad.put("task", "detection");
        bad.remove("labels");
        try {
            Manifest.parse(Json.write(bad), GoldenTest.schema());
            fail("accepted an invalid manifest");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("/task") && e.getMessage().contains("labels"));
        }
    }

    @Test
    public void jsonRoundTrip() {
        Object v = Json.parse("{\"a\": [1, 2.5, -3e2, true, null, \"x\\\"y\"]}");
        assertEquals(v, Json.parse(Json.write(v)));
    }
}
