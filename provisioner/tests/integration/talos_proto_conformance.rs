//! Our Talos protos (provisioner/proto) against Talos' own compiled descriptor set:
//! every service, method (types, streaming), message, field (name, number, type,
//! label) and enum value we declare must exist in Talos v1.11 exactly as declared.

use crate::common;

use std::collections::BTreeMap;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use provisioner::os::talos::api::SUBSET_DESCRIPTORS;

#[derive(Default)]
struct Index {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
    methods: BTreeMap<String, prost_types::MethodDescriptorProto>,
}

fn index(set: &FileDescriptorSet, packages: &[&str]) -> Index {
    fn walk(ix: &mut Index, prefix: &str, m: &DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        for e in &m.enum_type {
            ix.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        for n in &m.nested_type {
            walk(ix, &name, n);
        }
        ix.messages.insert(name, m.clone());
    }
    let mut ix = Index::default();
    for f in set.file.iter().filter(|f| packages.contains(&f.package())) {
        let pkg = format!(".{}", f.package());
        for m in &f.message_type {
            walk(&mut ix, &pkg, m);
        }
        for e in &f.enum_type {
            ix.enums.insert(format!("{pkg}.{}", e.name()), e.clone());
        }
        for s in &f.service {
            for m in &s.method {
                ix.methods
                    .insert(format!("{pkg}.{}/{}", s.name(), m.name()), m.clone());
            }
        }
    }
    ix
}

#[test]
fn our_protos_match_talos_v1_11() {
    let Some(path) = common::fixture("talos/v1.11/api.descriptors") else {
        return;
    };
    let talos = FileDescriptorSet::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let ours = FileDescriptorSet::decode(SUBSET_DESCRIPTORS).unwrap();
    let (t, o) = (
        index(&talos, &["machine", "common"]),
        index(&ours, &["machine", "common"]),
    );
    let mut problems = Vec::new();
    assert!(
        o.methods.len() >= 8 && o.messages.len() > 20,
        "our descriptor set looks empty"
    );
    for (name, m) in &o.methods {
        match t.methods.get(name) {
            None => problems.push(format!("method {name} not in Talos")),
            Some(tm) => {
                for (what, a, b) in [
                    ("input", m.input_type(), tm.input_type()),
                    ("output", m.output_type(), tm.output_type()),
                ] {
                    if a != b {
                        problems.push(format!("{name}: {what} {a} vs Talos {b}"));
                    }
                }
                if (m.client_streaming(), m.server_streaming())
                    != (tm.client_streaming(), tm.server_streaming())
                {
                    problems.push(format!("{name}: streaming differs"));
                }
            }
        }
    }
    for (name, m) in &o.messages {
        let Some(tm) = t.messages.get(name) else {
            problems.push(format!("message {name} not in Talos"));
            continue;
        };
        for f in &m.field {
            match tm.field.iter().find(|tf| tf.number() == f.number()) {
                None => problems.push(format!(
                    "{name}.{} = {}: no such field number in Talos",
                    f.name(),
                    f.number()
                )),
                Some(tf) => {
                    if (tf.name(), tf.r#type(), tf.label(), tf.type_name())
                        != (f.name(), f.r#type(), f.label(), f.type_name())
                    {
                        problems.push(format!(
                            "{name} field {}: ours {} {:?} {:?} {}, Talos {} {:?} {:?} {}",
                            f.number(),
                            f.name(),
                            f.r#type(),
                            f.label(),
                            f.type_name(),
                            tf.name(),
                            tf.r#type(),
                            tf.label(),
                            tf.type_name()
                        ));
                    }
                }
            }
        }
    }
    for (name, e) in &o.enums {
        let Some(te) = t.enums.get(name) else {
            problems.push(format!("enum {name} not in Talos"));
            continue;
        };
        for v in &e.value {
            if !te
                .value
                .iter()
                .any(|tv| tv.name() == v.name() && tv.number() == v.number())
            {
                problems.push(format!("{name}.{} = {} differs in Talos", v.name(), v.number()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "conformance: {} methods, {} messages, {} enums match Talos v1.11",
        o.methods.len(),
        o.messages.len(),
        o.enums.len()
    );
}
