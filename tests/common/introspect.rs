//! Comparing D-Bus interfaces as introspection XML describes them, for checking the
//! dbus/*.xml files users install against what the live daemon serves.

/// The members of interface `iface` in D-Bus introspection XML, in a canonical form that
/// ignores what XML and introspection leave free: whitespace, comments, attribute order,
/// `<x/>` versus `<x></x>`, and the order of methods, signals and properties (the order of
/// a method's args is kept). One string per member, sorted; None if `iface` is absent.
/// For comparing the installed dbus/*.xml files with what the live daemon serves.
pub fn interface_members(xml: &str, iface: &str) -> Option<Vec<String>> {
    #[derive(Default)]
    struct Node {
        head: String,
        children: Vec<Node>,
    }
    fn render(n: &Node) -> String {
        if n.children.is_empty() {
            n.head.clone()
        } else {
            let kids: Vec<String> = n.children.iter().map(render).collect();
            format!("{} [{}]", n.head, kids.join(", "))
        }
    }

    // Comments may contain anything that looks like a tag.
    let mut text = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);

    // Tags as (name, sorted attributes, kind): kind 0 open, 1 close, 2 self-closing.
    let mut tags = Vec::new();
    let mut rest = text.as_str();
    while let Some(lt) = rest.find('<') {
        let gt = rest[lt..].find('>')? + lt;
        let raw = rest[lt + 1..gt].trim();
        rest = &rest[gt + 1..];
        if raw.starts_with('?') || raw.starts_with('!') {
            continue; // <?xml ...?>, <!DOCTYPE ...>
        }
        if let Some(name) = raw.strip_prefix('/') {
            tags.push((name.trim().to_string(), Vec::new(), 1));
            continue;
        }
        let (raw, kind) = match raw.strip_suffix('/') {
            Some(r) => (r.trim(), 2),
            None => (raw, 0),
        };
        let name_end = raw.find(char::is_whitespace).unwrap_or(raw.len());
        let mut attrs = Vec::new();
        let mut a = raw[name_end..].trim_start();
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let quote = v.chars().next()?;
            let end = v[1..].find(quote)? + 1;
            attrs.push(format!("{key}={quote}{}{quote}", &v[1..end]).replace('\'', "\""));
            a = v[end + 1..].trim_start();
        }
        attrs.sort();
        tags.push((raw[..name_end].to_string(), attrs, kind));
    }

    let wanted = [format!("name=\"{iface}\"")];
    let start = tags
        .iter()
        .position(|(n, a, _)| n == "interface" && a[..] == wanted[..])?;
    let mut stack = vec![Node::default()];
    if tags[start].2 == 0 {
        for (name, attrs, kind) in &tags[start + 1..] {
            let head = std::iter::once(name.clone())
                .chain(attrs.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            match kind {
                0 => stack.push(Node {
                    head,
                    children: Vec::new(),
                }),
                2 => stack.last_mut()?.children.push(Node {
                    head,
                    children: Vec::new(),
                }),
                _ if stack.len() == 1 => break, // </interface>
                _ => {
                    let done = stack.pop()?;
                    stack.last_mut()?.children.push(done);
                }
            }
        }
    }
    let mut members: Vec<String> = stack.first()?.children.iter().map(render).collect();
    members.sort();
    Some(members)
}
