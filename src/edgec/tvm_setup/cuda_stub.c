/* Build-time stand-in for the NVIDIA driver library (libcuda.so.1).
 *
 * TVM's CUDA code generator lives in libtvm_runtime_cuda.so, which links
 * libcuda.so.1; on a build machine without an NVIDIA driver that library does
 * not load and TVM stores CUDA *source* in the artifact instead of a compiled
 * cubin. Loading this stub first lets the code generator load; every driver
 * call fails, so nothing can run on a GPU from this process.
 */
static const char *edgec_msg = "no CUDA driver (edgec build-time stub)";
int cuInit(unsigned int flags) { (void)flags; return 100; }
int cuDriverGetVersion(int *v) { if (v) *v = 0; return 100; }
int cuDeviceGetCount(int *n) { if (n) *n = 0; return 100; }
int cuDeviceGetName(char *name, int len, int dev) { (void)name; (void)len; (void)dev; return 100; }
int cuFuncSetAttribute(void *f, int a, int v) { (void)f; (void)a; (void)v; return 100; }
int cuGetErrorName(int e, const char **s) { (void)e; *s = edgec_msg; return 0; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = edgec_msg; return 0; }
int cuLaunchKernelEx(const void *c, void *f, void **p, void **x) { (void)c; (void)f; (void)p; (void)x; return 100; }
int cuModuleGetFunction(void **f, void *m, const char *n) { (void)f; (void)m; (void)n; return 100; }
int cuModuleLoadData(void **m, const void *img) { (void)m; (void)img; return 100; }
int cuModuleUnload(void *m) { (void)m; return 100; }
int cuTensorMapEncodeTiled(void) { return 100; }
int cuGetProcAddress(const char *s, void **p, int v, unsigned long long f) { (void)s; (void)v; (void)f; if (p) *p = 0; return 500; }
int cuGetProcAddress_v2(const char *s, void **p, int v, unsigned long long f, void *st) { (void)s; (void)v; (void)f; (void)st; if (p) *p = 0; return 500; }
