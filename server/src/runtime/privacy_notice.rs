//! R19: the privacy notice each hosted homeserver publishes.
//!
//! The notice is served by Synapse's consent resource (`/_matrix/consent`), so what [`render`]
//! returns is a Jinja2 template: the customer's own details are fixed into it (escaped for HTML
//! *and* for Jinja, so a name such as `{{ x }}` is shown as typed), while the accept form uses the
//! variables Synapse's consent resource passes to its templates (`user`, `userhmac`, `version`,
//! `has_consented`, `public_version`). The version is derived from the rendered text
//! ([`version_of`]), so any change to the notice is a new version that every user must accept
//! again (`user_consent.version` in the Synapse config). The node agent writes it where Synapse
//! reads its templates.

use sha2::{Digest, Sha256};

/// Who the notice names.
#[derive(Debug, Clone, Copy)]
pub struct NoticeInput<'a> {
    /// The customer entity: the data controller.
    pub entity_name: &'a str,
    /// The customer administrator's email: the controller's contact.
    pub admin_email: &'a str,
    /// The homeserver's Matrix server name.
    pub server_name: &'a str,
    /// The host: the data processor ("matrixhost").
    pub processor_name: &'a str,
}

/// Escapes text for HTML (element content and quoted attribute values) and neutralises the
/// Jinja2 delimiters, which all start or end with a brace.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

/// The privacy notice as a Synapse consent template (HTML + Jinja2).
pub fn render(input: &NoticeInput) -> String {
    let entity = escape(input.entity_name);
    let email = escape(input.admin_email);
    let server = escape(input.server_name);
    let processor = escape(input.processor_name);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="robots" content="noindex">
<title>Privacy notice for {server}</title>
</head>
<body>
<h1>Privacy notice for the {server} Matrix homeserver</h1>
<p>Notice version {{{{ version }}}}.</p>

<h2>Who is responsible for your data</h2>
<p><strong>Data controller:</strong> {entity}, which runs the Matrix homeserver <code>{server}</code>
and decides how it is used. Contact: <a href="mailto:{email}">{email}</a>.</p>
<p><strong>Data processor:</strong> {processor}, which hosts and operates this homeserver for {entity}
and handles your data only on {entity}'s instructions and to keep the service running.</p>

<h2>What is processed</h2>
<ul>
<li>Your account: your Matrix ID, display name, avatar, email address, a salted hash of your
password, your devices and their settings.</li>
<li>What you send on this server: messages, files and media, and room membership. Messages in
end-to-end encrypted rooms are stored only in encrypted form; neither {entity} nor {processor}
can read their contents.</li>
<li>Connection logs: the IP address and client used for each request. They are kept for 30 days
and then deleted.</li>
</ul>
<p>When a room includes people on other Matrix servers, the messages in that room are also sent to
those servers, which handle them under their own terms.</p>

<h2>Your rights</h2>
<p>You may ask to see the data held about you and to receive a copy of it, to have it corrected,
and to have your account deactivated and your data erased. You may also object to or ask to
restrict its processing, and complain to a data protection authority.</p>

<h2>Contact</h2>
<p>Send any request or question about your data to {entity} at
<a href="mailto:{email}">{email}</a>. {entity} may ask {processor} to help answer it.</p>

{{% if public_version %}}
<p>After you sign in to {server} you will be asked to accept this notice.</p>
{{% elif has_consented %}}
<p>You have accepted this version of the notice.</p>
{{% else %}}
<form method="post" action="consent">
<input type="hidden" name="v" value="{{{{ version }}}}">
<input type="hidden" name="u" value="{{{{ user }}}}">
<input type="hidden" name="h" value="{{{{ userhmac }}}}">
<input type="submit" value="I have read and accept this notice">
</form>
{{% endif %}}
</body>
</html>
"#
    )
}

/// `v` + the first 12 hex characters of the SHA-256 of the rendered notice.
pub fn version_of(html: &str) -> String {
    let digest = Sha256::digest(html.as_bytes());
    format!("v{}", &hex::encode(digest)[..VERSION_HEX])
}

const VERSION_HEX: usize = 12;

/// Whether `v` has the shape of a version [`version_of`] makes (anything else a homeserver's
/// database holds is not one of ours).
pub fn is_version(v: &str) -> bool {
    v.strip_prefix('v').is_some_and(|hex| hex.len() == VERSION_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(entity: &'a str, email: &'a str) -> NoticeInput<'a> {
        NoticeInput { entity_name: entity, admin_email: email, server_name: "chat.acme.example", processor_name: "matrixhost" }
    }

    #[test]
    fn r19_names_controller_processor_and_server() {
        let html = render(&input("Acme Corp", "it@acme.example"));
        assert!(html.contains("<strong>Data controller:</strong> Acme Corp"));
        assert!(html.contains("mailto:it@acme.example"));
        assert!(html.contains("<strong>Data processor:</strong> matrixhost"));
        assert!(html.contains("chat.acme.example"));
        assert!(html.contains("30 days"));
        assert!(html.contains("Your rights"));
    }

    #[test]
    fn r19_has_the_consent_form_synapse_expects() {
        let html = render(&input("Acme Corp", "it@acme.example"));
        for field in [
            r#"name="v" value="{{ version }}""#,
            r#"name="u" value="{{ user }}""#,
            r#"name="h" value="{{ userhmac }}""#,
            r#"<form method="post" action="consent">"#,
            "{% if public_version %}",
            "{% elif has_consented %}",
            "{% endif %}",
        ] {
            assert!(html.contains(field), "missing {field}");
        }
    }

    #[test]
    fn inputs_are_escaped_for_html_and_jinja() {
        let html = render(&input("<script>alert(1)</script> & {{ config }} {% raw %} {# x #}", "a\"b@x.example"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#123;&#123; config &#125;&#125;"));
        assert!(!html.contains("{{ config"));
        assert!(!html.contains("{% raw"));
        assert!(!html.contains("{# x"));
        assert!(html.contains("a&quot;b@x.example"));
        // The only Jinja in the template is ours.
        assert_eq!(html.matches("{{").count(), 4);
        assert_eq!(html.matches("{%").count(), 4);
    }

    #[test]
    fn r19_version_changes_with_content() {
        let a = render(&input("Acme Corp", "it@acme.example"));
        let b = render(&input("Acme Corporation", "it@acme.example"));
        let va = version_of(&a);
        assert_eq!(va, version_of(&a));
        assert_ne!(va, version_of(&b));
        assert_eq!(va.len(), 13);
        assert!(va.starts_with('v') && va[1..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(is_version(&va));
        for other in ["", "v", "V0123456789ab", "v0123456789AB", "v0123456789a", "v0123456789abc", "1.0"] {
            assert!(!is_version(other), "{other}");
        }
    }
}
