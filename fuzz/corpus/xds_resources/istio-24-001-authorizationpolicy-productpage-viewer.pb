
,
cluster.localistio-systemcluster.local2—
productpage-viewerbookinfosecurity.istio.io/v1beta1"

appproductpage8BD5
3
1cluster.local/ns/bookinfo/sa/bookinfo-productpage"
*GET