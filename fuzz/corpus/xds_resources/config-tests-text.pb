
,
cluster.localistio-systemcluster.local*
demo"
istio.io/dataplane-modeambient8
sdemodefault"n*10.0.0.1:
appsBcluster.local"%
sdemo	10.96.0.1"Pê?*
apps*2
sdemosecurity.istio.io/v1"


apps2ê?2m
ademosecurity.istio.io/v1beta108BC
R
10.0.0.0/8"

808080(2
request.headers[x-debug]1