module vectorschema.dev/node/images

go 1.26
