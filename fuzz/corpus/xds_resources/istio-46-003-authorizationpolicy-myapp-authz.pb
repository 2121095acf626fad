
,
cluster.localistio-systemcluster.local2Ú
myapp-authz
productionsecurity.istio.io/v1beta1"

appmyapp8BtW
U
'cluster.local/ns/production/sa/frontend
*cluster.local/ns/production/sa/api-gateway"
*GET*POST:/api/*B"
*GET:/health:/ready