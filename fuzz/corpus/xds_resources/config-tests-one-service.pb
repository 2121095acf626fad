
,
cluster.localistio-systemcluster.local
demo8
sdemodefault"n*10.0.0.1:
appsBcluster.local"%
sdemo	10.96.0.1"Pê?*
apps