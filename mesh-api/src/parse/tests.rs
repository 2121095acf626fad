//! Unit tests of the envelope: documents, metadata, apiVersions, kinds, lists, display.

use crate::diag::Code;
use crate::parse::parse_documents;
use crate::testing::{diags, e, errors, warnings, VS_HEAD};

#[test]
fn multi_document_yaml_with_comments() {
    let docs = parse_documents(
        "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {}\n",
        "f.yaml",
    );
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0].resource.as_ref().unwrap().kind(),
        crate::kinds::Kind::Namespace
    );
    assert_eq!(docs[1].location.document, 2);
    assert!(docs.iter().all(|d| d.is_valid()));
}

#[test]
fn missing_metadata_and_name_are_errors() {
    let y = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
    let y = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {namespace: x}\nspec: {host: a}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
    let y = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: Not_Valid}\nspec: {host: a}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
}

#[test]
fn api_versions_as_istio_serves_them() {
    for v in ["v1", "v1beta1", "v1alpha3"] {
        let y = format!("apiVersion: networking.istio.io/{v}\nkind: DestinationRule\nmetadata: {{name: a}}\nspec: {{host: a}}\n");
        assert!(errors(&y).is_empty(), "{v}");
    }
    let y =
        "apiVersion: security.istio.io/v1alpha3\nkind: PeerAuthentication\nmetadata: {name: a}\n";
    assert_eq!(errors(y), vec![e("AMB0005", "apiVersion")]);
    let y = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a}\nspec: {}\n";
    assert!(errors(y).is_empty());
}

#[test]
fn unknown_kinds_are_warnings_and_syntax_errors_are_errors() {
    let y = "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {name: a}\n";
    assert_eq!(warnings(y), vec![e("AMB0006", "")]);
    let d = diags("a: [unclosed\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::YamlSyntax);
    assert!(d[0].object.is_none());
    let d = diags("- just\n- a list\n");
    assert_eq!(d[0].code, Code::YamlSyntax);
}

#[test]
fn lists_are_expanded() {
    let y = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {}\n";
    let docs = parse_documents(y, "l.yaml");
    assert_eq!(docs.len(), 2);
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
}

#[test]
fn display_is_mesh_node_style() {
    let y = format!("{VS_HEAD}spec:\n  host: reviews\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n");
    let d = diags(&y);
    assert_eq!(
        d[0].to_string(),
        "VirtualService demo/r: field spec.host: unknown field; did you mean spec.hosts?"
    );
    // The misspelt field is not reported again as missing hosts.
    assert!(!d.iter().any(|x| x.field == "spec.hosts"), "{d:#?}");
}
