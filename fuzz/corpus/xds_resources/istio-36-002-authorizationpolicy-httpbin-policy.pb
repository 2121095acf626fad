
,
cluster.localistio-systemcluster.local2~
httpbin-policydefaultsecurity.istio.io/v1beta1"

apphttpbin8B4%
#
!cluster.local/ns/default/sa/sleep"
*GET