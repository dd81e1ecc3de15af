//! `crds/` is generated from the Rust types; this fails when they drift apart.

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = lro_operator::api::crds_yaml().expect("CRDs serialise");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/lro.dev.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/lro.dev.yaml exists");
    assert!(
        generated == committed,
        "crds/lro.dev.yaml is out of date: run hack/gen-crds"
    );
}

#[test]
fn every_schema_field_has_a_description() {
    // `kubectl explain` shows these; an undocumented field is a bug.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                let top_level = matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                if !top_level && sub.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in lro_operator::api::crds() {
        let crd = serde_json::to_value(&crd).expect("CRD serialises");
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            walk(&kind, &version["schema"]["openAPIV3Schema"], &mut missing);
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a doc comment: {missing:#?}"
    );
}

#[test]
fn every_format_is_one_the_api_server_knows() {
    // `kubectl explain` warns `unrecognized format "uint32"` for anything else.
    const KNOWN: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "date",
        "date-time",
        "datetime",
        "duration",
        "password",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "bsonobjectid",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
    ];
    fn walk(path: &str, v: &serde_json::Value, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(f) = map.get("format").and_then(|f| f.as_str())
                    && !KNOWN.contains(&f)
                {
                    bad.push(format!("{path}: {f}"));
                }
                for (k, sub) in map {
                    walk(&format!("{path}.{k}"), sub, bad);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(path, item, bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for crd in lro_operator::api::crds() {
        walk("", &serde_json::to_value(&crd).unwrap(), &mut bad);
    }
    assert!(
        bad.is_empty(),
        "formats the API server does not know: {bad:?}"
    );
}
