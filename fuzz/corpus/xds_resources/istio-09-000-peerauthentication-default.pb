
,
cluster.localistio-systemcluster.local*4
defaultistio-systemsecurity.istio.io/v1beta1(