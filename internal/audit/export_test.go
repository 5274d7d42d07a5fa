package audit

// Slim is the audit cache's transform, for the external tests.
var Slim = slim
