package dev.pocusedge.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** A bundle's manifest.json, validated against the shared JSON Schema, with typed accessors for the app. */
public final class Manifest {
    public final Map<String, Object> raw;
    public final String name, task, target, precision, modelFile;
    public final int height, width, channels;
    public final String inputLayout, inputDtype, outputLayout, outputDtype, activation, maskResize;
    public final double pixelScale;
    public final float[] mean, std;
    public final boolean rawInput;
    public final Double threshold;
    public final Double inputScale, outputScale;
    public final int inputZeroPoint, outputZeroPoint;
    public final List<String> labels;

    @SuppressWarnings("unchecked")
    private Manifest(Map<String, Object> m) {
        raw = m;
        name = (String) m.get("name");
        task = (String) m.get("task");
        target = (String) m.get("target");
        precision = (String) m.get("precision");
        modelFile = (String) m.get("model_file");
        Map<String, Object> in = (Map<String, Object>) ((List<Object>) m.get("inputs")).get(0);
        Map<String, Object> out = (Map<String, Object>) ((List<Object>) m.get("outputs")).get(0);
        Map<String, Object> pre = (Map<String, Object>) m.get("preprocessing");
        Map<String, Object> post = (Map<String, Object>) m.get("postprocessing");
        List<Object> size = (List<Object>) pre.get("image_size");
        height = ((Double) size.get(0)).intValue();
        width = ((Double) size.get(1)).intValue();
        channels = ((Double) in.get("channels")).intValue();
        inputLayout = (String) in.get("layout");
        inputDtype = (String) in.get("dtype");
        outputLayout = (String) out.getOrDefault("layout", "NCHW");
        outputDtype = (String) out.get("dtype");
        pixelScale = (Double) pre.get("scale");
        mean = floats((List<Object>) pre.get("mean"));
        std = floats((List<Object>) pre.get("std"));
        rawInput = (Boolean) pre.get("raw_input");
        activation = (String) post.get("activation");
        threshold = (Double) post.get("threshold");
        maskResize = (String) post.get("mask_resize");
        Map<String, Object> qi = (Map<String, Object>) in.get("quantization");
        Map<String, Object> qo = (Map<String, Object>) out.get("quantization");
        inputScale = qi == null ? null : (Double) qi.get("scale");
        inputZeroPoint = qi == null ? 0 : ((Double) qi.get("zero_point")).intValue();
        outputScale = qo == null ? null : (Double) qo.get("scale");
        outputZeroPoint = qo == null ? 0 : ((Double) qo.get("zero_point")).intValue();
        labels = new ArrayList<>();
        for (Object o : (List<Object>) m.get("labels")) labels.add((String) o);
    }

    private static float[] floats(List<Object> values) {
        float[] f = new float[values.size()];
        for (int k = 0; k < f.length; k++) f[k] = ((Double) values.get(k)).floatValue();
        return f;
    }

    /** Parse and validate; throws IllegalArgumentException listing the schema violations. */
    @SuppressWarnings("unchecked")
    public static Manifest parse(String json, Map<String, Object> schema) {
        Object doc = Json.parse(json);
        List<String> errors = new SchemaValidator(schema).validate(doc);
        if (!errors.isEmpty()) throw new IllegalArgumentException("manifest.json is invalid: " + String.join("; ", errors));
        return new Manifest((Map<String, Object>) doc);
    }

    public boolean integerInput() { return inputDtype.equals("int8") || inputDtype.equals("uint8"); }

    public boolean integerOutput() { return outputDtype.equals("int8") || outputDtype.equals("uint8"); }
}
