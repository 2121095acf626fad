
,
cluster.localistio-systemcluster.local*2
default
productionsecurity.istio.io/v1beta1(*R
legacy-service
productionsecurity.istio.io/v1beta1"

applegacy-service(*4
defaultistio-systemsecurity.istio.io/v1beta1(