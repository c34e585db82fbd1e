package dev.pocusedge.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The bundle's self-test (pocus_edge/runtime/selftest.py, same files, same comparison): reference inputs as the
 * model sees them, the outputs the exporting host computed, and the precision's limits. {@link #run} feeds every
 * stored input to the device's model twice and compares; a {@link Report} that did not pass blocks inference
 * ({@link Report#requirePassed}). Metrics per frame: raw_max_abs (output units, or quantised units for an integer
 * output), prob_max_abs (after the manifest's sigmoid/softmax), dice_min (masks at model resolution), cosine_min
 * (embeddings); a limit of null is reported, not judged.
 */
public final class SelfTest {
    public static final String FORMAT = "pocus-reference-vectors/1";
    public static final String INDEX = "reference/vectors.json";

    /** Reads a bundle file by its path relative to the bundle folder (assets, a directory, a test fixture). */
    public interface Files { byte[] read(String path) throws IOException; }

    /** The device's model: the input buffer of one frame -> its output, dequantised, in the model's layout. */
    public interface Model { float[] run(ByteBuffer input) throws Exception; }

    public final String task, precision, outputName, engine, rule, rawUnits;
    public final List<String> names = new ArrayList<>();
    final String inputDtype, outputDtype, outputLayout, activation;
    final int[] outputShape;
    final int inputLength, outputLength, classes;
    final byte[] input;
    final float[] expected;  // raw: output units, or the integer values of a quantised output
    final double threshold, outScale;
    final int outZero;
    final Double rawLimit, probLimit, diceLimit, cosineLimit;

    @SuppressWarnings("unchecked")
    private SelfTest(Map<String, Object> index, byte[] input, byte[] output) {
        task = (String) index.get("task");
        precision = (String) index.get("precision");
        for (Object f : (List<Object>) index.get("frames")) names.add((String) ((Map<String, Object>) f).get("name"));
        Map<String, Object> in = (Map<String, Object>) index.get("input");
        List<Object> outs = (List<Object>) index.get("outputs");
        if (outs.size() != 1) throw new IllegalArgumentException(INDEX + ": one output is supported");
        Map<String, Object> out = (Map<String, Object>) outs.get(0);
        inputDtype = (String) in.get("dtype");
        outputDtype = (String) out.get("dtype");
        outputName = (String) out.get("name");
        outputLayout = (String) out.get("layout");
        activation = (String) out.get("activation");
        Double t = (Double) out.get("threshold");
        threshold = t == null ? 0.5 : t;
        Map<String, Object> q = (Map<String, Object>) out.get("quantization");
        outScale = q == null ? 1.0 : (Double) q.get("scale");
        outZero = q == null ? 0 : ((Double) q.get("zero_point")).intValue();
        int[] inShape = ints((List<Object>) in.get("shape"));
        outputShape = ints((List<Object>) out.get("shape"));
        int n = names.size();
        if (n < 1 || inShape[0] != n || outputShape[0] != n) throw new IllegalArgumentException(INDEX + ": frame counts differ");
        inputLength = product(inShape) / n;
        outputLength = product(outputShape) / n;
        classes = outputShape.length == 4 ? ("NHWC".equals(outputLayout) ? outputShape[3] : outputShape[1]) : outputShape[outputShape.length - 1];
        if (input.length != inputLength * n * size(inputDtype)) throw new IllegalArgumentException(INDEX + ": input.bin has the wrong size");
        if (output.length != outputLength * n * size(outputDtype)) throw new IllegalArgumentException(INDEX + ": output.bin has the wrong size");
        this.input = input;
        expected = decode(output, outputDtype);
        Map<String, Object> src = (Map<String, Object>) index.get("expected_from");
        engine = (String) src.get("engine");
        Map<String, Object> tol = (Map<String, Object>) index.get("tolerance");
        rule = (String) tol.get("rule");
        rawUnits = (String) tol.get("raw_units");
        rawLimit = (Double) tol.get("raw_max_abs");
        probLimit = (Double) tol.get("prob_max_abs");
        diceLimit = (Double) tol.get("dice_min");
        cosineLimit = (Double) tol.get("cosine_min");
    }

    /** Read reference/vectors.json and its two arrays; IllegalArgumentException when they are malformed. */
    @SuppressWarnings("unchecked")
    public static SelfTest load(Files files) throws IOException {
        Map<String, Object> index = (Map<String, Object>) Json.parse(new String(files.read(INDEX), java.nio.charset.StandardCharsets.UTF_8));
        if (!FORMAT.equals(index.get("format"))) throw new IllegalArgumentException(INDEX + ": format " + index.get("format") + ", expected " + FORMAT);
        String in = (String) ((Map<String, Object>) index.get("input")).get("file");
        String out = (String) ((Map<String, Object>) ((List<Object>) index.get("outputs")).get(0)).get("file");
        return new SelfTest(index, files.read("reference/" + checkedName(in)), files.read("reference/" + checkedName(out)));
    }

    /** Load and run; a bundle without (readable) vectors gives a failed report that says so, never a pass. */
    public static Report check(Files files, Model model) {
        SelfTest test;
        try {
            test = load(files);
        } catch (IOException | RuntimeException e) {
            return new Report(new ArrayList<>(), false, "self-test impossible: the bundle carries no readable reference vectors (" + INDEX + ": "
                + e.getMessage() + "); re-export it with pocus-export. Inference is blocked");
        }
        return test.run(model);
    }

    private static String checkedName(String name) {
        if (name == null || name.contains("/") || name.contains("\\") || name.startsWith(".")) throw new IllegalArgumentException(INDEX + ": bad file name " + name);
        return name;
    }

    public int frames() { return names.size(); }

    /** Frame k's input as the model takes it: a direct buffer in native byte order (the file is little-endian). */
    public ByteBuffer input(int frame) {
        int itemSize = size(inputDtype);
        ByteBuffer src = ByteBuffer.wrap(input, frame * inputLength * itemSize, inputLength * itemSize).slice().order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer dst = ByteBuffer.allocateDirect(inputLength * itemSize).order(ByteOrder.nativeOrder());
        if (itemSize == 4) dst.asFloatBuffer().put(src.asFloatBuffer());
        else if (itemSize == 2) dst.asShortBuffer().put(src.asShortBuffer());
        else dst.put(src);
        dst.rewind();
        return dst;
    }

    /** Frame k's input values as numbers (integers for int8/uint8 inputs). */
    public float[] inputValues(int frame) {
        int itemSize = size(inputDtype);
        byte[] part = java.util.Arrays.copyOfRange(input, frame * inputLength * itemSize, (frame + 1) * inputLength * itemSize);
        return decode(part, inputDtype);
    }

    /** The comparison of frame k. */
    public static final class Check {
        public final int frame;
        public final String name;
        public final double rawMaxAbs, probMaxAbs, diceMin, cosineMin;  // NaN where the task has no such metric
        public final List<String> failures = new ArrayList<>();

        Check(int frame, String name, double raw, double prob, double dice, double cosine) {
            this.frame = frame; this.name = name; rawMaxAbs = raw; probMaxAbs = prob; diceMin = dice; cosineMin = cosine;
        }

        public boolean passed() { return failures.isEmpty(); }
    }

    /** Compare `output` (what the model returned for frame k: dequantised floats, the model's layout) with the reference. */
    public Check compare(int frame, float[] output) {
        if (output.length != outputLength) throw new IllegalArgumentException("model output has " + output.length + " values, the reference " + outputLength);
        float[] e = new float[outputLength];
        float[] a = new float[outputLength];  // dequantised, as the runtime compares probabilities
        double raw = 0;
        boolean integer = isInteger(outputDtype);
        for (int k = 0; k < outputLength; k++) {
            float ek = expected[frame * outputLength + k];
            float x = output[k];
            if (!Float.isFinite(x)) return nonFinite(frame);
            if (integer) {
                long q = Math.round(x / outScale) + outZero;  // the integer the model wrote (dequantisation is exact)
                raw = Math.max(raw, Math.abs(q - (double) ek));
                e[k] = (float) ((ek - (float) outZero) * (float) outScale);
            } else {
                raw = Math.max(raw, Math.abs((double) x - ek));
                e[k] = ek;
            }
            a[k] = x;
        }
        Check c;
        if (task.equals("embedding")) {
            double dot = 0, ne = 0, na = 0;
            for (int k = 0; k < outputLength; k++) { dot += (double) e[k] * a[k]; ne += (double) e[k] * e[k]; na += (double) a[k] * a[k]; }
            c = new Check(frame, names.get(frame), raw, Double.NaN, Double.NaN, dot / Math.max(Math.sqrt(ne) * Math.sqrt(na), 1e-12));
        } else {
            int hw = outputLength / classes;
            float[] pe = activate(Postprocess.channelsFirst(e, classes, 1, hw, outputLayout), hw);
            float[] pa = activate(Postprocess.channelsFirst(a, classes, 1, hw, outputLayout), hw);
            double prob = 0;
            for (int k = 0; k < outputLength; k++) prob = Math.max(prob, Math.abs((double) pe[k] - pa[k]));
            double dice = task.equals("segmentation") ? maskAgreement(pe, pa, hw) : Double.NaN;
            c = new Check(frame, names.get(frame), raw, prob, dice, Double.NaN);
        }
        judge(c);
        return c;
    }

    private Check nonFinite(int frame) {
        Check c = new Check(frame, names.get(frame), Double.POSITIVE_INFINITY, Double.POSITIVE_INFINITY, 0, -1);
        c.failures.add("the model output holds NaN or infinite values");
        return c;
    }

    private float[] activate(float[] chw, int hw) {
        float[] p = new float[chw.length];
        if ("sigmoid".equals(activation)) for (int k = 0; k < chw.length; k++) p[k] = Postprocess.sigmoid(chw[k]);
        else if ("softmax".equals(activation)) for (int k = 0; k < hw; k++) Postprocess.softmax(chw, k, classes, hw, p);
        else System.arraycopy(chw, 0, p, 0, p.length);
        return p;
    }

    private double maskAgreement(float[] pe, float[] pa, int hw) {
        if (classes == 1) {
            int both = 0, total = 0;
            for (int k = 0; k < hw; k++) {
                boolean me = pe[k] >= threshold, ma = pa[k] >= threshold;
                total += (me ? 1 : 0) + (ma ? 1 : 0);
                both += me && ma ? 1 : 0;
            }
            return total == 0 ? 1.0 : 2.0 * both / total;
        }
        double sum = 0;
        int[] me = argmax(pe, hw), ma = argmax(pa, hw);
        for (int c = 1; c < classes; c++) {
            int both = 0, total = 0;
            for (int k = 0; k < hw; k++) {
                total += (me[k] == c ? 1 : 0) + (ma[k] == c ? 1 : 0);
                both += me[k] == c && ma[k] == c ? 1 : 0;
            }
            sum += total == 0 ? 1.0 : 2.0 * both / total;
        }
        return sum / (classes - 1);
    }

    private int[] argmax(float[] p, int hw) {
        int[] out = new int[hw];
        for (int k = 0; k < hw; k++) for (int c = 1; c < classes; c++) if (p[c * hw + k] > p[out[k] * hw + k]) out[k] = c;
        return out;
    }

    private void judge(Check c) {
        limit(c, "raw_max_abs", c.rawMaxAbs, rawLimit, false, " " + rawUnits);
        if (task.equals("embedding")) {
            limit(c, "cosine_min", c.cosineMin, cosineLimit, true, "");
            return;
        }
        limit(c, "prob_max_abs", c.probMaxAbs, probLimit, false, "");
        if (task.equals("segmentation")) limit(c, "dice_min", c.diceMin, diceLimit, true, "");
    }

    private static void limit(Check c, String name, double value, Double limit, boolean atLeast, String units) {
        if (limit == null) return;  // reported, not judged
        boolean ok = atLeast ? value >= limit : value <= limit;  // NaN fails
        if (!ok) c.failures.add(name + " " + String.format(java.util.Locale.ROOT, "%.6g", value) + (atLeast ? " < " : " > ") + limit + units);
    }

    /** Every frame twice through `model`; the report gates inference. An exception from the model fails the self-test. */
    public Report run(Model model) {
        List<Check> checks = new ArrayList<>();
        boolean deterministic = true;
        try {
            for (int k = 0; k < frames(); k++) {
                float[] first = model.run(input(k));
                float[] second = model.run(input(k));
                deterministic &= java.util.Arrays.equals(first, second);
                Check a = compare(k, first), b = compare(k, second);
                checks.add(a.passed() ? b : a);
            }
        } catch (Exception e) {
            return new Report(checks, deterministic, "self-test could not run the model: " + e + ". Inference is blocked");
        }
        Check bad = null;
        for (Check c : checks) if (!c.passed()) { bad = c; break; }
        String message = bad == null ? null : "self-test failed: frame " + bad.frame + " (" + bad.name + ") output " + outputName + ": "
            + String.join("; ", bad.failures) + " (expected from " + engine + "). The model does not behave as it did at export; inference is blocked";
        return new Report(checks, deterministic, message);
    }

    /** The self-test's outcome; {@link #requirePassed} is the gate in front of every inference. */
    public static final class Report {
        public final List<Check> checks;
        public final boolean deterministic;
        public final String failure;  // one line; null when passed

        Report(List<Check> checks, boolean deterministic, String failure) {
            this.checks = checks; this.deterministic = deterministic; this.failure = failure;
        }

        public boolean passed() { return failure == null; }

        /** Throws IllegalStateException with the one-line reason unless the self-test passed. */
        public void requirePassed() {
            if (failure != null) throw new IllegalStateException(failure);
        }

        /** One line for the screen: passed with the worst differences, or the failure. */
        public String summary() {
            if (failure != null) return failure;
            double raw = 0, prob = 0;
            for (Check c : checks) { raw = Math.max(raw, c.rawMaxAbs); if (!Double.isNaN(c.probMaxAbs)) prob = Math.max(prob, c.probMaxAbs); }
            return String.format(java.util.Locale.ROOT, "self-test passed: %d frames, max raw difference %.3g, max probability difference %.3g%s",
                checks.size(), raw, prob, deterministic ? "" : " (outputs differ between two runs of the same input)");
        }
    }

    static int size(String dtype) {
        switch (dtype) {
            case "float32": return 4;
            case "float16": return 2;
            case "int8": case "uint8": return 1;
            default: throw new IllegalArgumentException(INDEX + ": unsupported dtype " + dtype);
        }
    }

    static boolean isInteger(String dtype) { return dtype.equals("int8") || dtype.equals("uint8"); }

    static float[] decode(byte[] bytes, String dtype) {
        ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[bytes.length / size(dtype)];
        for (int k = 0; k < out.length; k++) {
            switch (dtype) {
                case "float32": out[k] = b.getFloat(); break;
                case "float16": out[k] = halfToFloat(b.getShort()); break;
                case "int8": out[k] = b.get(); break;
                default: out[k] = b.get() & 0xFF;
            }
        }
        return out;
    }

    /** IEEE 754 half -> float (Float.float16ToFloat needs Java 20). */
    static float halfToFloat(short h) {
        int sign = (h >>> 15) & 1, exp = (h >>> 10) & 0x1F, mant = h & 0x3FF;
        float v;
        if (exp == 0) v = (float) (mant * Math.pow(2, -24));
        else if (exp == 31) v = mant == 0 ? Float.POSITIVE_INFINITY : Float.NaN;
        else v = (float) ((1 + mant / 1024.0) * Math.pow(2, exp - 15));
        return sign == 1 ? -v : v;
    }

    private static int[] ints(List<Object> values) {
        int[] out = new int[values.size()];
        for (int k = 0; k < out.length; k++) out[k] = ((Double) values.get(k)).intValue();
        return out;
    }

    private static int product(int[] shape) {
        int p = 1;
        for (int d : shape) p *= d;
        return p;
    }
}
