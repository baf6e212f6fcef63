//! Comparing D-Bus interfaces as introspection XML describes them, for checking the
//! dbus/*.xml files users install against what the live daemon serves. zbus_xml parses
//! the XML, so what XML leaves free (whitespace, comments, attribute order, `<x/>` versus
//! `<x></x>`) never counts; what is compared is every member with all that defines it.

use zbus_xml::{Annotation, Arg, ArgDirection, Interface, Node, PropertyAccess};

/// The members of interface `iface` in introspection XML `xml`, one line per method,
/// signal, property and interface annotation, sorted: the order of members is free (as
/// it is in introspection data), the order of a method's or signal's args is kept. A
/// member's line holds its name, its args (direction, type, name) or its property type
/// and access, and its annotations and those of its args. None if `iface` is absent;
/// panics if `xml` is not introspection data.
pub fn interface_members(xml: &str, iface: &str) -> Option<Vec<String>> {
    let node = Node::try_from(xml)
        .unwrap_or_else(|e| panic!("introspection XML does not parse ({e}):\n{xml}"));
    let iface = find(&node, iface)?;
    let mut members = Vec::new();
    for m in iface.methods() {
        members.push(call(
            "method",
            m.name(),
            m.args(),
            ArgDirection::In,
            m.annotations(),
        ));
    }
    for s in iface.signals() {
        members.push(call(
            "signal",
            s.name(),
            s.args(),
            ArgDirection::Out,
            s.annotations(),
        ));
    }
    for p in iface.properties() {
        let access = match p.access() {
            PropertyAccess::Read => "read",
            PropertyAccess::Write => "write",
            PropertyAccess::ReadWrite => "readwrite",
        };
        members.push(format!(
            "property {} {} {access}{}",
            p.name(),
            **p.ty(),
            annotations(p.annotations())
        ));
    }
    for a in iface.annotations() {
        members.push(format!("annotation {}={:?}", a.name(), a.value()));
    }
    members.sort();
    Some(members)
}

/// The first interface named `name` in `node` or the nodes below it.
fn find<'n, 'a>(node: &'n Node<'a>, name: &str) -> Option<&'n Interface<'a>> {
    node.interfaces()
        .iter()
        .find(|i| i.name().as_str() == name)
        .or_else(|| node.nodes().iter().find_map(|n| find(n, name)))
}

/// A method or signal: its args in order; an arg without a direction has the one the
/// specification gives it (`in` for a method's, `out` for a signal's).
fn call(
    kind: &str,
    name: impl std::fmt::Display,
    args: &[Arg],
    default: ArgDirection,
    annotated: &[Annotation],
) -> String {
    let arg = |a: &Arg| {
        let dir = match a.direction().unwrap_or(default) {
            ArgDirection::In => "in",
            ArgDirection::Out => "out",
        };
        format!(
            "{dir} {} {}{}",
            **a.ty(),
            a.name().unwrap_or("_"),
            annotations(a.annotations())
        )
    };
    let args: Vec<String> = args.iter().map(arg).collect();
    format!(
        "{kind} {name}({}){}",
        args.join(", "),
        annotations(annotated)
    )
}

/// ` [name="value", ...]` sorted, or nothing.
fn annotations(list: &[Annotation]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut all: Vec<String> = list
        .iter()
        .map(|a| format!("{}={:?}", a.name(), a.value()))
        .collect();
    all.sort();
    format!(" [{}]", all.join(", "))
}
