
,
cluster.localistio-systemcluster.local*E
strictdemosecurity.istio.io/v1"

appserver(2ÇG2ÉG2r
allow-clientdemosecurity.istio.io/v1"

appserver8B3#
!
cluster.local/ns/demo/sa/client"
8080