
,
cluster.localistio-systemcluster.local*
demo"
istio.io/dataplane-modeambientf

client-7d9democlient"node-a*	10.10.1.22/run/netns/ambit-x-client:
appclientBcluster.local";
serverdemo
10.96.0.10"
httpPê?"TCP*
appserver*/
defaultistio-systemsecurity.istio.io/v1(