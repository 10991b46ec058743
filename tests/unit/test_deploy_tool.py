"""tools/deploy.py (`make deploy`) without a cluster: the values it installs the chart
with render the local image, never pulled, and its Qdrant; qdrantlite's objects run the
server script from a ConfigMap as hardened as the operator."""

from __future__ import annotations

from tests.helm import one, render

from deploy import QDRANTLITE, chart_values, qdrant_objects, split_image


def test_split_image() -> None:
    assert split_image("localhost/vectorschema:0.1.0-abc") == (
        "localhost/vectorschema",
        "0.1.0-abc",
    )
    assert split_image("localhost:5000/vs:1") == ("localhost:5000/vs", "1")
    assert split_image("localhost:5000/vs") == ("localhost:5000/vs", "latest")


def test_the_chart_runs_the_local_image_with_the_given_qdrant() -> None:
    values = chart_values("localhost/vectorschema:0.1.0-abc", "http://10.0.0.7:6333")
    docs = render(values)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/vectorschema:0.1.0-abc"
    assert container["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QDRANT_URL"] == "http://10.0.0.7:6333"


def test_qdrantlite_runs_from_a_configmap_hardened() -> None:
    docs = {d["kind"]: d for d in qdrant_objects("localhost/vectorschema:x")}
    assert docs["ConfigMap"]["data"]["qdrantlite.py"] == QDRANTLITE.read_text()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["imagePullPolicy"] == "Never"
    assert c["command"][1] == "/opt/qdrantlite/qdrantlite.py"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert docs["Service"]["spec"]["ports"][0]["port"] == 6333
