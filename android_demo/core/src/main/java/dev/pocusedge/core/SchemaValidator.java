package dev.pocusedge.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Validates a manifest against the repository's JSON Schema (pocus_edge/runtime/manifest.schema.json), the same
 * file the Python runtime uses. Supports the keywords that schema uses: type, required, properties,
 * additionalProperties, enum, const, minItems, maxItems, items, minimum, maximum, exclusiveMinimum, minLength,
 * minProperties, pattern and local $ref.
 */
public final class SchemaValidator {
    private final Map<String, Object> root;

    public SchemaValidator(Map<String, Object> schema) { this.root = schema; }

    /** All violations as "path: message" strings; empty when valid. */
    public List<String> validate(Object document) {
        List<String> errors = new ArrayList<>();
        check(root, document, "", errors);
        return errors;
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> resolve(Map<String, Object> schema) {
        Object ref = schema.get("$ref");
        if (ref == null) return schema;
        Map<String, Object> node = root;
        for (String part : ((String) ref).substring(2).split("/")) node = (Map<String, Object>) node.get(part);
        return node;
    }

    private static boolean hasType(Object v, String type) {
        switch (type) {
            case "object": return v instanceof Map;
            case "array": return v instanceof List;
            case "string": return v instanceof String;
            case "boolean": return v instanceof Boolean;
            case "null": return v == null;
            case "number": return v instanceof Double;
            case "integer": return v instanceof Double && ((Double) v) == Math.rint((Double) v);
            default: return false;
        }
    }

    @SuppressWarnings("unchecked")
    private void check(Map<String, Object> schemaIn, Object v, String path, List<String> errors) {
        Map<String, Object> schema = resolve(schemaIn);
        String where = path.isEmpty() ? "(top level)" : path;
        Object type = schema.get("type");
        if (type != null) {
            List<Object> types = type instanceof List ? (List<Object>) type : List.of(type);
            boolean ok = false;
            for (Object t : types) ok |= hasType(v, (String) t);
            if (!ok) { errors.add(where + ": expected " + types + ", got " + (v == null ? "null" : v.getClass().getSimpleName())); return; }
        }
        if (schema.containsKey("const") && !equal(schema.get("const"), v)) errors.add(where + ": must be " + schema.get("const"));
        if (schema.containsKey("enum")) {
            boolean found = false;
            for (Object o : (List<Object>) schema.get("enum")) found |= equal(o, v);
            if (!found) errors.add(where + ": " + v + " is not one of " + schema.get("enum"));
        }
        if (v instanceof Double) {
            double d = (Double) v;
            if (schema.containsKey("minimum") && d < (Double) schema.get("minimum")) errors.add(where + ": below minimum");
            if (schema.containsKey("maximum") && d > (Double) schema.get("maximum")) errors.add(where + ": above maximum");
            if (schema.containsKey("exclusiveMinimum") && d <= (Double) schema.get("exclusiveMinimum")) errors.add(where + ": must be > " + schema.get("exclusiveMinimum"));
        }
        if (v instanceof String) {
            String s = (String) v;
            if (schema.containsKey("minLength") && s.length() < ((Double) schema.get("minLength")).intValue()) errors.add(where + ": too short");
            if (schema.containsKey("pattern") && !java.util.regex.Pattern.compile((String) schema.get("pattern")).matcher(s).find()) errors.add(where + ": does not match " + schema.get("pattern"));
        }
        if (v instanceof List) {
            List<Object> a = (List<Object>) v;
            if (schema.containsKey("minItems") && a.size() < ((Double) schema.get("minItems")).intValue()) errors.add(where + ": too few items");
            if (schema.containsKey("maxItems") && a.size() > ((Double) schema.get("maxItems")).intValue()) errors.add(where + ": too many items");
            if (schema.get("items") instanceof Map) {
                for (int k = 0; k < a.size(); k++) check((Map<String, Object>) schema.get("items"), a.get(k), path + "/" + k, errors);
            }
        }
        if (v instanceof Map) {
            Map<String, Object> m = (Map<String, Object>) v;
            if (schema.containsKey("required")) {
                for (Object key : (List<Object>) schema.get("required")) {
                    if (!m.containsKey(key)) errors.add(where + ": missing required field " + key);
                }
            }
            if (schema.containsKey("minProperties") && m.size() < ((Double) schema.get("minProperties")).intValue()) errors.add(where + ": too few fields");
            Map<String, Object> props = (Map<String, Object>) schema.getOrDefault("properties", Map.of());
            Object additional = schema.get("additionalProperties");
            for (Map.Entry<String, Object> e : m.entrySet()) {
                String child = path + "/" + e.getKey();
                if (props.containsKey(e.getKey())) {
                    check((Map<String, Object>) props.get(e.getKey()), e.getValue(), child, errors);
                } else if (Boolean.FALSE.equals(additional)) {
                    errors.add(where + ": unexpected field " + e.getKey());
                } else if (additional instanceof Map) {
                    check((Map<String, Object>) additional, e.getValue(), child, errors);
                }
            }
        }
    }

    private static boolean equal(Object a, Object b) {
        if (a == null || b == null) return a == b;
        if (a instanceof Double && b instanceof Double) return ((Double) a).doubleValue() == ((Double) b).doubleValue();
        return a.equals(b);
    }
}
