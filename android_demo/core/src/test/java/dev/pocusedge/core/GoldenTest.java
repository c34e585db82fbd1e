package dev.pocusedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.awt.image.BufferedImage;
import java.awt.image.Raster;
import java.io.File;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.junit.Test;

/** The JVM core reproduces the Python runtime's tensors and outputs (golden vectors from tools/make_golden.py). */
public class GoldenTest {
    static Map<String, Object> schema() throws Exception {
        @SuppressWarnings("unchecked")
        Map<String, Object> s = (Map<String, Object>) Json.parse(Files.readString(new File(System.getProperty("schema.path")).toPath()));
        return s;
    }

    static Preprocess.Gray readGray(String path) throws Exception {
        BufferedImage img = ImageIO.read(new File(path));
        Raster r = img.getRaster();
        int h = img.getHeight(), w = img.getWidth();
        if (r.getNumBands() == 1) {
            byte[] px = new byte[h * w];
            for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) px[y * w + x] = (byte) r.getSample(x, y, 0);
            return Preprocess.fromUint8(px, h, w);
        }
        int[] argb = img.getRGB(0, 0, w, h, null, 0, w);
        return Preprocess.fromArgb(argb, h, w);
    }

    static float[] floats(Object list) {
        @SuppressWarnings("unchecked")
        List<Object> l = (List<Object>) list;
        float[] f = new float[l.size()];
        for (int k = 0; k < f.length; k++) f[k] = ((Double) l.get(k)).floatValue();
        return f;
    }

    @Test
    @SuppressWarnings("unchecked")
    public void goldenCasesMatchPython() throws Exception {
        File[] files = new File(System.getProperty("golden.dir")).listFiles((d, n) -> n.endsWith(".json"));
        assertTrue("no golden cases found", files != null && files.length >= 5);
        Map<String, Object> schema = schema();
        for (File f : files) {
            Map<String, Object> c = (Map<String, Object>) Json.parse(Files.readString(f.toPath()));
            Manifest m = Manifest.parse(Json.write(c.get("manifest")), schema);
            Preprocess.Gray g = readGray((String) c.get("image"));
            assertEquals(f.getName(), ((Double) c.get("height")).intValue(), g.height);
            float[] x = Preprocess.normalized(g, m);
            float[] expected = floats(c.get("input"));
            if (m.integerInput()) {
                byte[] q = Preprocess.quantize(x, m.inputScale, m.inputZeroPoint, m.inputDtype.equals("uint8"));
                int diff = 0;
                for (int k = 0; k < q.length; k++) if (q[k] != (byte) expected[k]) diff++;
                assertEquals(f.getName() + ": int8 input values differing", 0, diff);
            } else {
                assertEquals(f.getName(), expected.length, x.length);
                for (int k = 0; k < x.length; k++) assertEquals(f.getName() + " input[" + k + "]", expected[k], x[k], 1e-5);
            }
            float[] out = floats(c.get("model_output"));
            if (m.integerOutput()) {
                byte[] q = new byte[out.length];
                for (int k = 0; k < q.length; k++) q[k] = (byte) out[k];
                out = Postprocess.dequantize(q, m.outputScale, m.outputZeroPoint, m.outputDtype.equals("uint8"));
            }
            float[] probs = floats(c.get("probabilities"));
            if (m.task.equals("classification")) {
                float[] p = Postprocess.classify(out, m);
                for (int k = 0; k < p.length; k++) assertEquals(f.getName(), probs[k], p[k], 1e-5);
                continue;
            }
            int classes = ((Double) c.get("classes")).intValue();
            float[] chw = Postprocess.channelsFirst(out, classes, m.height, m.width, m.outputLayout);
            Postprocess.Segmentation s = Postprocess.segment(chw, classes, m, g.height, g.width);
            assertEquals(f.getName(), probs.length, s.probabilities.length);
            for (int k = 0; k < probs.length; k++) assertEquals(f.getName() + " prob[" + k + "]", probs[k], s.probabilities[k], 1e-5);
            float[] mask = floats(c.get("mask"));
            int flips = 0;
            for (int k = 0; k < mask.length; k++) {
                if (s.mask[k] != (byte) mask[k]) {
                    boolean atThreshold = classes == 1 && Math.abs(s.probabilities[k] - 0.5) < 1e-6;
                    assertTrue(f.getName() + ": mask differs away from the threshold at " + k, atThreshold);
                    flips++;
                }
            }
            assertTrue(f.getName() + ": too many threshold ties", flips <= 2);
        }
    }
}
