// js-libp2p 2.10's peer store takes its per-peer locks through mortice 3.3,
// whose queue (it-queue) calls Promise.withResolvers, new in Node 22. Every
// mortice release that libp2p 2.x's peer store accepts (^3.2.1) does, so on
// Node 20 we supply it (the standard definition). Imported first by net.mjs.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve, reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
