
,
cluster.localistio-systemcluster.local
demo"\
reviewsdemo
10.96.0.20"
httpøFøF*
appreviews2!
istio.io/use-waypointwaypoint"
plaindemo
10.96.0.21"P