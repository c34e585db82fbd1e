package dev.pocusedge.core;

/**
 * The runtime's post-processing (pocus_edge/runtime/results.py): dequantise, channels first, sigmoid/softmax,
 * resize probabilities to the original size, threshold (binary) or argmax (multi-class); softmax for classifiers;
 * L2 normalisation for embeddings.
 */
public final class Postprocess {
    private Postprocess() {}

    /** Probabilities (K x H x W, channels first) and the uint8 mask (H x W) at the original image size. */
    public static final class Segmentation {
        public final int classes, height, width;
        public final float[] probabilities;
        public final byte[] mask;

        Segmentation(int classes, int height, int width, float[] probabilities, byte[] mask) {
            this.classes = classes; this.height = height; this.width = width;
            this.probabilities = probabilities; this.mask = mask;
        }
    }

    public static float sigmoid(float x) {
        if (x >= 0) return (float) (1.0 / (1.0 + Math.exp(-x)));
        double e = Math.exp(x);
        return (float) (e / (1.0 + e));
    }

    /** Softmax over `k` values starting at `offset` with stride `stride` (max-shifted). */
    static void softmax(float[] x, int offset, int k, int stride, float[] out) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int c = 0; c < k; c++) max = Math.max(max, x[offset + c * stride]);
        double[] e = new double[k];
        for (int c = 0; c < k; c++) { e[c] = Math.exp(x[offset + c * stride] - max); sum += e[c]; }
        for (int c = 0; c < k; c++) out[offset + c * stride] = (float) (e[c] / sum);
    }

    /** Raw output (float or quantised bytes already dequantised by {@link #dequantize}) -> channels-first floats. */
    public static float[] channelsFirst(float[] out, int channels, int height, int width, String layout) {
        if (!"NHWC".equals(layout)) return out;
        float[] chw = new float[out.length];
        int n = height * width;
        for (int k = 0; k < n; k++) for (int c = 0; c < channels; c++) chw[c * n + k] = out[k * channels + c];
        return chw;
    }

    public static float[] dequantize(byte[] q, double scale, int zeroPoint, boolean unsigned) {
        float[] x = new float[q.length];
        float s = (float) scale;
        for (int k = 0; k < q.length; k++) x[k] = ((unsigned ? (q[k] & 0xFF) : q[k]) - (float) zeroPoint) * s;
        return x;
    }

    /** Segmentation post-processing of one sample's channels-first logits (K x S x S). */
    public static Segmentation segment(float[] logits, int classes, Manifest m, int origH, int origW) {
        int n = m.height * m.width;
        float[] probs = new float[logits.length];
        if ("sigmoid".equals(m.activation)) {
            for (int k = 0; k < logits.length; k++) probs[k] = sigmoid(logits[k]);
        } else {
            for (int k = 0; k < n; k++) softmax(logits, k, classes, n, probs);
        }
        float[] full = "bilinear_probabilities".equals(m.maskResize) && (origH != m.height || origW != m.width)
            ? Preprocess.resize(probs, classes, m.height, m.width, origH, origW) : probs;
        int on = origH * origW;
        byte[] mask = new byte[on];
        double t = m.threshold == null ? 0.5 : m.threshold;
        for (int k = 0; k < on; k++) {
            if (classes == 1) {
                mask[k] = (byte) (full[k] >= t ? 1 : 0);
            } else {
                int best = 0;
                for (int c = 1; c < classes; c++) if (full[c * on + k] > full[best * on + k]) best = c;
                mask[k] = (byte) best;
            }
        }
        return new Segmentation(classes, origH, origW, full, mask);
    }

    /** Classification: softmax of logits (or the probabilities as given when activation is 'none'). */
    public static float[] classify(float[] logits, Manifest m) {
        float[] p = new float[logits.length];
        if ("softmax".equals(m.activation)) softmax(logits, 0, logits.length, 1, p);
        else System.arraycopy(logits, 0, p, 0, p.length);
        return p;
    }

    /** Embedding: L2-normalised vector. */
    public static float[] embed(float[] v) {
        double norm = 0;
        for (float x : v) norm += (double) x * x;
        norm = Math.max(Math.sqrt(norm), 1e-12);
        float[] out = new float[v.length];
        for (int k = 0; k < v.length; k++) out[k] = (float) (v[k] / norm);
        return out;
    }
}
