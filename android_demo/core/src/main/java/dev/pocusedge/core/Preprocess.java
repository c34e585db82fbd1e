package dev.pocusedge.core;

/**
 * The runtime's pre-processing (pocus_edge/runtime/preprocess.py and images.py), number for number:
 * gray in [0,1] (uint8 / 255, RGB by BT.601 luma), antialiased bilinear resize with float64 weights and sums,
 * mean/std normalisation (or raw 0..255 pixels), NCHW or NHWC, and int8/uint8 quantisation.
 */
public final class Preprocess {
    private Preprocess() {}

    /** A gray frame: row-major floats in [0, 1]. */
    public static final class Gray {
        public final int height, width;
        public final float[] pixels;

        public Gray(int height, int width, float[] pixels) {
            if (height <= 0 || width <= 0) throw new IllegalArgumentException("empty image (" + height + " x " + width + ")");
            if (pixels.length != height * width) throw new IllegalArgumentException("pixel count does not match size");
            this.height = height; this.width = width; this.pixels = pixels;
        }
    }

    /** 8-bit gray pixels (unsigned bytes) -> Gray. */
    public static Gray fromUint8(byte[] gray, int height, int width) {
        float[] p = new float[gray.length];
        for (int k = 0; k < p.length; k++) p[k] = (gray[k] & 0xFF) / 255.0f;
        return new Gray(height, width, p);
    }

    /**
     * ARGB ints (Android Bitmap.getPixels layout) -> Gray by BT.601 luma in whole numbers, alpha ignored:
     * (299 R + 587 G + 114 B + 500) / 1000, then / 255, exactly as the runtime and training decode (data/dicom.py luma_uint8).
     */
    public static Gray fromArgb(int[] argb, int height, int width) {
        float[] p = new float[argb.length];
        for (int k = 0; k < p.length; k++) {
            int r = (argb[k] >> 16) & 0xFF, g = (argb[k] >> 8) & 0xFF, b = argb[k] & 0xFF;
            p[k] = ((299 * r + 587 * g + 114 * b + 500) / 1000) / 255.0f;
        }
        return new Gray(height, width, p);
    }

    /** out x in antialiased bilinear weights (PIL's triangle filter, support widened on downscale). */
    public static double[][] resizeWeights(int in, int out) {
        double scale = (double) in / out;
        double support = Math.max(scale, 1.0);
        double[][] w = new double[out][in];
        for (int i = 0; i < out; i++) {
            double center = (i + 0.5) * scale, sum = 0;
            for (int j = 0; j < in; j++) {
                double d = Math.abs((j + 0.5) - center) / support;
                w[i][j] = Math.max(1.0 - d, 0.0);
                sum += w[i][j];
            }
            for (int j = 0; j < in; j++) w[i][j] /= sum;
        }
        return w;
    }

    /** Resize `planes` channel-first planes of inH x inW to outH x outW (float64 inside, float32 out). */
    public static float[] resize(float[] src, int planes, int inH, int inW, int outH, int outW) {
        double[][] wy = resizeWeights(inH, outH), wx = resizeWeights(inW, outW);
        float[] dst = new float[planes * outH * outW];
        double[] rows = new double[outH * inW];
        for (int c = 0; c < planes; c++) {
            int base = c * inH * inW;
            for (int i = 0; i < outH; i++) {
                for (int x = 0; x < inW; x++) {
                    double s = 0;
                    for (int y = 0; y < inH; y++) if (wy[i][y] != 0) s += wy[i][y] * src[base + y * inW + x];
                    rows[i * inW + x] = s;
                }
            }
            for (int i = 0; i < outH; i++) {
                for (int j = 0; j < outW; j++) {
                    double s = 0;
                    for (int x = 0; x < inW; x++) if (wx[j][x] != 0) s += rows[i * inW + x] * wx[j][x];
                    dst[c * outH * outW + i * outW + j] = (float) s;
                }
            }
        }
        return dst;
    }

    /** The model input as floats (C x H x W or H x W x C per the manifest), before any quantisation. */
    public static float[] normalized(Gray g, Manifest m) {
        float[] r = resize(g.pixels, 1, g.height, g.width, m.height, m.width);
        int n = m.height * m.width, c = m.rawInput ? 1 : 3;
        float[] chw = new float[c * n];
        for (int ch = 0; ch < c; ch++) {
            for (int k = 0; k < n; k++) {
                chw[ch * n + k] = m.rawInput ? (float) (r[k] / (float) m.pixelScale) : (r[k] - m.mean[ch]) / m.std[ch];
            }
        }
        if (!m.inputLayout.equals("NHWC")) return chw;
        float[] hwc = new float[c * n];
        for (int k = 0; k < n; k++) for (int ch = 0; ch < c; ch++) hwc[k * c + ch] = chw[ch * n + k];
        return hwc;
    }

    /** q = clamp(rint(x / scale) + zeroPoint) with float32 division and round-half-even, as numpy does. */
    public static byte[] quantize(float[] x, double scale, int zeroPoint, boolean unsigned) {
        byte[] q = new byte[x.length];
        float s = (float) scale;
        int lo = unsigned ? 0 : -128, hi = unsigned ? 255 : 127;
        for (int k = 0; k < x.length; k++) {
            double v = Math.rint(x[k] / s) + zeroPoint;
            q[k] = (byte) (int) Math.max(lo, Math.min(hi, v));
        }
        return q;
    }
}
