package dev.pocusedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.FileNotFoundException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The core's self-test on bundles exported by Python (tools/make_selftest_golden.py): the bundle's own outputs pass,
 * a swapped model's fail with the same numbers Python computes, and a failed or impossible self-test blocks inference.
 */
public class SelfTestTest {
    static List<File> cases() {
        File[] dirs = new File(System.getProperty("golden.dir"), "selftest").listFiles(d -> new File(d, "runs.json").isFile());
        assertTrue("no self-test golden cases", dirs != null && dirs.length >= 3);
        return List.of(dirs);
    }

    static SelfTest.Files folder(File bundle) {
        return path -> Files.readAllBytes(new File(bundle, path).toPath());
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> runs(File c) throws Exception {
        return (Map<String, Object>) Json.parse(Files.readString(new File(c, "runs.json").toPath()));
    }

    @SuppressWarnings("unchecked")
    static List<float[]> outputs(Map<String, Object> runs, String key) {
        List<float[]> out = new ArrayList<>();
        for (Object frame : (List<Object>) runs.get(key)) out.add(GoldenTest.floats(frame));
        return out;
    }

    /** The device's model, played by recorded outputs: frame k's output for frame k's input bytes. */
    static SelfTest.Model stub(SelfTest t, List<float[]> outs) {
        return input -> {
            for (int k = 0; k < t.frames(); k++) if (t.input(k).equals(input)) return outs.get(k).clone();
            throw new AssertionError("the input buffer matches no reference frame");
        };
    }

    static SelfTest load(File c) throws Exception {
        return SelfTest.load(folder(new File(c, "bundle")));
    }

    @Test
    @SuppressWarnings("unchecked")
    public void theBundlesOwnOutputsPass() throws Exception {
        for (File c : cases()) {
            File bundle = new File(c, "bundle");
            Manifest m = Manifest.parse(Files.readString(new File(bundle, "manifest.json").toPath()), GoldenTest.schema());
            assertEquals(SelfTest.INDEX, ((Map<String, Object>) m.raw.get("reference_vectors")).get("index"));
            SelfTest t = load(c);
            Map<String, Object> runs = runs(c);
            assertEquals(c.getName(), 4, t.frames());
            List<Object> heads = (List<Object>) runs.get("input_head");
            for (int k = 0; k < t.frames(); k++) {
                float[] head = GoldenTest.floats(heads.get(k));
                float[] values = t.inputValues(k);
                for (int i = 0; i < head.length; i++) assertEquals(c.getName() + " input " + k, head[i], values[i], 0f);
            }
            SelfTest.Report r = t.run(stub(t, outputs(runs, "good")));
            assertTrue(c.getName() + ": " + r.failure, r.passed());
            assertTrue(r.deterministic);
            r.requirePassed();
            assertTrue(r.summary(), r.summary().startsWith("self-test passed: 4 frames, max raw difference 0"));
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    public void aSwappedModelFailsWithPythonsNumbersAndBlocksInference() throws Exception {
        for (File c : cases()) {
            SelfTest t = load(c);
            Map<String, Object> runs = runs(c);
            SelfTest.Report r = t.run(stub(t, outputs(runs, "swapped")));
            assertFalse(c.getName(), r.passed());
            assertTrue(r.failure, r.failure.startsWith("self-test failed: frame 0 (" + t.names.get(0) + ") output " + t.outputName + ": "));
            assertTrue(r.failure, r.failure.endsWith("inference is blocked"));
            try {
                r.requirePassed();
                fail("inference was not blocked");
            } catch (IllegalStateException e) {
                assertEquals(r.failure, e.getMessage());
            }
            List<Object> python = (List<Object>) ((Map<String, Object>) runs.get("python")).get("swapped");
            List<Object> fails = (List<Object>) ((Map<String, Object>) runs.get("python")).get("swapped_fails");
            for (int k = 0; k < t.frames(); k++) {
                Map<String, Object> p = (Map<String, Object>) python.get(k);
                SelfTest.Check check = r.checks.get(k);
                assertEquals(c.getName() + " raw " + k, (Double) p.get("raw_max_abs"), check.rawMaxAbs, 1e-5);
                if (p.containsKey("prob_max_abs")) assertEquals(c.getName() + " prob " + k, (Double) p.get("prob_max_abs"), check.probMaxAbs, 1e-5);
                if (p.containsKey("dice_min")) assertEquals(c.getName() + " dice " + k, (Double) p.get("dice_min"), check.diceMin, 1e-9);
                assertEquals(c.getName() + " verdict " + k, fails.get(k), !check.passed());
            }
        }
    }

    static File named(String name) {
        for (File c : cases()) if (c.getName().equals(name)) return c;
        throw new AssertionError("no golden case " + name);
    }

    @Test
    public void limitsAreTheIndexsOwn() throws Exception {
        File c = named("onnx_fp32_seg");
        SelfTest t = load(c);
        float[] good = outputs(runs(c), "good").get(0);
        float[] near = good.clone(), far = good.clone();
        near[0] += (float) (0.5 * t.rawLimit);
        far[0] += (float) (2 * t.rawLimit);
        assertTrue(t.compare(0, near).passed());
        List<String> failures = t.compare(0, far).failures;
        assertTrue(failures.toString(), failures.size() >= 1 && failures.get(0).startsWith("raw_max_abs "));
        far[0] = Float.NaN;
        assertEquals("the model output holds NaN or infinite values", t.compare(0, far).failures.get(0));

        File q = named("tflite_int8_nhwc_seg");
        SelfTest ti = load(q);
        assertEquals(3.0, ti.rawLimit, 0);
        float[] base = outputs(runs(q), "good").get(0);
        float[] three = base.clone(), four = base.clone();
        three[5] += (float) (3 * ti.outScale);  // three quantised units: within the int8 raw limit
        four[5] += (float) (4 * ti.outScale);
        for (String f : ti.compare(0, three).failures) assertFalse(f, f.startsWith("raw_max_abs"));
        assertEquals("raw_max_abs 4.00000 > 3.0 quantized units", ti.compare(0, four).failures.get(0));
    }

    @Test
    public void runToRunDifferencesAreReported() throws Exception {
        File c = named("onnx_fp32_seg");
        SelfTest t = load(c);
        List<float[]> good = outputs(runs(c), "good");
        SelfTest.Model plain = stub(t, good);
        int[] calls = {0};
        SelfTest.Report r = t.run(input -> {
            float[] out = plain.run(input);
            if (calls[0]++ % 2 == 1) out[0] += (float) (0.1 * t.rawLimit);  // the second run differs, within limits
            return out;
        });
        assertTrue(r.failure, r.passed());
        assertFalse(r.deterministic);
        assertTrue(r.summary(), r.summary().endsWith("(outputs differ between two runs of the same input)"));
    }

    @Test
    public void aBundleWithoutVectorsOrAFailingModelBlocksInference() throws Exception {
        SelfTest.Report missing = SelfTest.check(path -> { throw new FileNotFoundException(path); }, input -> new float[0]);
        assertFalse(missing.passed());
        assertTrue(missing.failure, missing.failure.startsWith("self-test impossible: the bundle carries no readable reference vectors"));
        try {
            missing.requirePassed();
            fail("inference was not blocked");
        } catch (IllegalStateException e) {
            assertTrue(e.getMessage().contains("re-export it with pocus-export"));
        }
        File c = named("onnx_fp32_cls");
        SelfTest.Report crashed = SelfTest.check(folder(new File(c, "bundle")), input -> { throw new RuntimeException("delegate failed"); });
        assertFalse(crashed.passed());
        assertTrue(crashed.failure, crashed.failure.contains("could not run the model") && crashed.failure.contains("delegate failed"));
    }
}
